# make deps: install what the build and the tests need, on Debian/Ubuntu.
# Idempotent and quick when all is there: apt-get runs (as root, or through
# sudo) only when dpkg says a package is missing (node and npm also count as
# present when on PATH: NodeSource's nodejs ships npm and conflicts with
# Debian's npm package), and `npm ci` (Prism, pinned
# in package-lock.json) only when node_modules/.bin/prism is absent.
# make prism: only the npm part.
.PHONY: deps deps-apt prism

DEPS_APT := libcurl4-openssl-dev libcjson-dev libarchive-dev zlib1g-dev libcmocka-dev \
            pkg-config python3 nodejs npm clang libclang-rt-14-dev valgrind cppcheck clang-tidy \
            busybox-static hyperfine musl-tools ca-certificates openssl curl
PRISM_BIN := node_modules/.bin/prism

deps: deps-apt prism

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
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	else echo "deps: need root (or sudo) to install:$$missing" >&2; exit 1; fi; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing

prism:
	@if [ -x $(PRISM_BIN) ]; then echo "deps: $(PRISM_BIN) present"; \
	else \
	    command -v npm >/dev/null 2>&1 || { echo "deps: npm missing (make deps-apt)" >&2; exit 1; }; \
	    echo "deps: npm ci (Prism, as pinned in package-lock.json)"; \
	    npm ci --no-audit --no-fund --loglevel=error; \
	fi
