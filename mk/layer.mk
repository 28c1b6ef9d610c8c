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
# nettle: libarchive's digests (shared anyway: gnutls, under libcurl, needs it)
LAYER_LDLIBS := $(LINK_LIBS) -Wl,-Bstatic -larchive -Wl,-Bdynamic -lnettle -lz
# libcurl stays loaded on first use (lib/src/dl.c), as in build/civis-agent:
# make-layer.sh copies it and its libraries (--dlopen); libarchive is taken
# from the static link (dl.c built with CIVIS_DL_LINKED_ARCHIVE).
LAYER_DLOPEN := --dlopen libcurl.so.4
LAYER_DL_OBJ := $(BUILD)/layer/dl_linked.o

$(LAYER_DL_OBJ): lib/src/dl.c lib/src/dl.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DCIVIS_DL_LINKED_ARCHIVE $(ALL_CFLAGS) -fPIC -c -o $@ $<

ifeq ($(LAYER_STATIC_ARCHIVE),1)
$(LAYER_AGENT): $(AGENT_OBJ) $(LAYER_DL_OBJ) $(STATICLIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Wl,--as-needed -Wl,--gc-sections -o $@ $(AGENT_OBJ) $(LAYER_DL_OBJ) \
	    $(STATICLIB) $(LDFLAGS) $(LAYER_LDLIBS)
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
