# make layer: the Docker base layer's file tree, assembled without Docker.
#   LAYER_DIR (default build/layer/opt/civis-agent; build/san/... with SAN=1) receives exactly what the
#   final FROM scratch stage of docker/Dockerfile holds at /opt/civis-agent:
#   the Dockerfile runs `make layer LAYER_DIR=/out/opt/civis-agent` too.
# make layer-test: run that tree in an empty root (unshare + chroot, the
#   agent as PID 1, busybox as the user's command) against the simulator.
# make layer-bench: the launcher's start-up cost (median of 200 runs).
#
# The layer's agent is the same objects as build/civis-agent, linked with
# libarchive statically and --gc-sections: the agent only writes tar.gz, and
# Debian's shared libarchive would bring libxml2 + ICU (35 MB) for formats it
# never uses. LAYER_STATIC_ARCHIVE=0 ships the plain build/civis-agent.
.PHONY: layer layer-test layer-bench

LAYER_DIR    ?= $(BUILD)/layer/opt/civis-agent
LAYER_PREFIX ?= /opt/civis-agent
LAYER_STATIC_ARCHIVE ?= 1
LAYER_AGENT  := $(BUILD)/layer/civis-agent
LAYER_BENCH_RUNS ?= 200
PYTHON ?= python3
# libarchive's own libraries, as its static link needs them: those that
# `pkg-config --static` names (make deps: deps-static installs their -dev
# packages). The part of libarchive the agent uses (tar.gz) needs only some
# (here only zlib), but --as-needed cannot tell: the unused members' references
# count before --gc-sections drops them (and a library left in whose own
# dependency is referenced is "DSO missing from command line"). So each
# library is tried away in turn, last first (dependents before what they
# depend on), and kept only when the link fails without it: the layer holds
# what the agent calls, whatever libarchive's build names. One the linker
# cannot find is left out of the tries and named if the link then fails.
LAYER_ARCHIVE_LIBS := $(filter-out -larchive,$(shell pkg-config --static --libs-only-l libarchive 2>/dev/null))
# libcurl stays loaded on first use (lib/src/dl.c), as in build/civis-agent:
# make-layer.sh copies it and its libraries (--dlopen); libarchive is taken
# from the static link (dl.c built with CIVIS_DL_LINKED_ARCHIVE).
LAYER_DLOPEN := --dlopen libcurl.so.4
LAYER_DL_OBJ := $(BUILD)/layer/dl_linked.o

$(LAYER_DL_OBJ): lib/src/dl.c lib/src/dl.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DCIVIS_DL_LINKED_ARCHIVE $(ALL_CFLAGS) -fPIC -c -o $@ $<

ifeq ($(LAYER_STATIC_ARCHIVE),1)
LAYER_LINK = $(CC) $(ALL_CFLAGS) -Wl,--as-needed -Wl,--gc-sections -o $@ $(AGENT_OBJ) $(LAYER_DL_OBJ) \
	    $(STATICLIB) $(LDFLAGS) $(LINK_LIBS) -Wl,-Bstatic -larchive -Wl,-Bdynamic
$(LAYER_AGENT): $(AGENT_OBJ) $(LAYER_DL_OBJ) $(STATICLIB)
	@mkdir -p $(dir $@)
	@libs=; missing=; \
	for l in $(LAYER_ARCHIVE_LIBS); do \
	    case "$$($(CC) -print-file-name=lib$${l#-l}.so)$$($(CC) -print-file-name=lib$${l#-l}.a)" in \
	    */*) libs="$$libs $$l" ;; *) missing="$$missing $$l" ;; esac; \
	done; \
	for l in $$(echo $$libs | tr ' ' '\n' | sed -n '1!G;h;$$p'); do \
	    try=$$(for x in $$libs; do [ "$$x" = "$$l" ] || printf '%s ' "$$x"; done); \
	    if $(LAYER_LINK) $$try >/dev/null 2>&1; then libs=$$try; fi; \
	done; \
	libs=$$(echo $$libs); \
	echo "layer: libarchive linked statically; of its libraries ($(LAYER_ARCHIVE_LIBS)) the agent's part needs: $${libs:-none}"; \
	echo "$(LAYER_LINK)" $$libs; \
	$(LAYER_LINK) $$libs || { echo "layer: the static link of libarchive failed$${missing:+ (not" \
	    "installed:$$missing)}: make deps installs the -dev packages of its libraries" \
	    "(deps-static)" >&2; exit 1; }
else
LAYER_DLOPEN += --dlopen libarchive.so.13
$(LAYER_AGENT): $(AGENT)
	@mkdir -p $(dir $@)
	cp $(AGENT) $@
endif

layer: $(LAYER_AGENT)
	sh docker/make-layer.sh --agent $(LAYER_AGENT) --out $(LAYER_DIR) --prefix $(LAYER_PREFIX) \
	    $(LAYER_DLOPEN)

layer-test: layer
	$(PYTHON) tests/layer/test_layer.py --layer $(LAYER_DIR)

layer-bench: layer tools
	@$(PYTHON) tests/layer/bench.py $(LAYER_BENCH_RUNS) $(LAYER_DIR) $(LAYER_AGENT)
