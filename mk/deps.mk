# make deps: install what the build and the tests need, on Debian/Ubuntu.
# Idempotent and quick when all is there: apt-get runs (as root, or through
# sudo) only when dpkg says a package is missing (node and npm also count as
# present when on PATH: NodeSource's nodejs ships npm and conflicts with
# Debian's npm package), and `npm ci` (Prism, pinned
# in package-lock.json) only when node_modules/.bin/prism is absent.
# make prism: only the npm part.
# deps-static: the layer links libarchive statically (mk/layer.mk), so it
# needs the -dev package of every library `pkg-config --static --libs
# libarchive` names (libarchive-dev depends on none of them); those the
# linker cannot find are installed. DEPS_STATIC_DEV maps a library to its
# Debian package (else lib<name>-dev); `make -s deps-static-list` prints
# "library package" for each (tests/layer checks docker/Dockerfile has them).
# podman, runc and debootstrap are for `make image-test` (mk/image.mk);
# tini and dumb-init for `make bench` (tests/bench/bench_upload.py, pid1).
.PHONY: deps deps-apt deps-static deps-static-list prism

DEPS_APT := libcurl4-openssl-dev libcjson-dev libarchive-dev zlib1g-dev libcmocka-dev \
            pkg-config python3 nodejs npm clang libclang-rt-14-dev valgrind cppcheck clang-tidy \
            busybox-static hyperfine musl-tools ca-certificates openssl curl \
            podman runc debootstrap tini dumb-init
DEPS_STATIC_DEV := nettle:nettle-dev acl:libacl1-dev lzma:liblzma-dev zstd:libzstd-dev \
            lz4:liblz4-dev bz2:libbz2-dev z:zlib1g-dev xml2:libxml2-dev crypto:libssl-dev \
            ssl:libssl-dev
PRISM_BIN := node_modules/.bin/prism
APT_INSTALL = if [ "$$(id -u)" -eq 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	else echo "deps: need root (or sudo) to install:$$missing" >&2; exit 1; fi; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing

deps: deps-apt deps-static prism

# "library package" for each library of libarchive's static link
deps-static-list:
	@for l in $$(pkg-config --static --libs-only-l libarchive); do \
	    n=$${l#-l}; [ "$$n" = archive ] && continue; p=lib$$n-dev; \
	    for m in $(DEPS_STATIC_DEV); do [ "$${m%%:*}" = "$$n" ] && p=$${m#*:}; done; \
	    echo "$$n $$p"; \
	done

deps-static: deps-apt
	@if ! command -v dpkg-query >/dev/null 2>&1; then exit 0; fi; \
	pkg-config --exists libarchive || { echo "deps: pkg-config finds no libarchive (libarchive-dev)" >&2; exit 1; }; \
	missing=""; \
	for pair in $$($(MAKE) -s --no-print-directory deps-static-list | tr ' ' ':'); do \
	    n=$${pair%%:*}; p=$${pair#*:}; \
	    case "$$($(CC) -print-file-name=lib$$n.so)$$($(CC) -print-file-name=lib$$n.a)" in \
	    */*) ;; *) missing="$$missing $$p";; esac; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: libarchive's static link has all its libraries"; exit 0; fi; \
	echo "deps: installing for libarchive's static link:$$missing"; \
	$(APT_INSTALL)

deps-apt:
	@if ! command -v dpkg-query >/dev/null 2>&1; then \
	    echo "deps: not a Debian system; install these (or their equivalents) yourself:"; \
	    echo "  $(DEPS_APT)"; exit 0; \
	fi; \
	missing=""; \
	for p in $(DEPS_APT); do \
	    case $$p in nodejs) c=node;; npm) c=npm;; *) c=;; esac; \
	    if [ -n "$$c" ] && command -v "$$c" >/dev/null 2>&1; then continue; fi; \
	    dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q '^install ok installed$$' \
	        || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; exit 0; fi; \
	echo "deps: installing$$missing"; \
	$(APT_INSTALL)

prism:
	@if [ -x $(PRISM_BIN) ]; then echo "deps: $(PRISM_BIN) present"; \
	else \
	    command -v npm >/dev/null 2>&1 || { echo "deps: npm missing (make deps-apt)" >&2; exit 1; }; \
	    echo "deps: npm ci (Prism, as pinned in package-lock.json)"; \
	    npm ci --no-audit --no-fund --loglevel=error; \
	fi
