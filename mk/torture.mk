# make torture: allocation-failure torture (curl's `runtests -t`) over the
# library's unit paths and a short agent run against the simulator.
# Everything is built in build/torture/ under ASan+UBSan with -DCIVIS_UNITTEST
# -DCIVIS_TORTURE; the library's and agent's objects get their malloc, calloc,
# realloc, strdup and strndup references renamed to the counting allocator of
# tests/torture/torture_alloc.c (objcopy --redefine-sym: the same effect as
# -Wl,--wrap but for our own objects only, so libcurl, cJSON, libc and the
# cmocka test code allocate as usual and are not counted).
#   CIVIS_FAIL_ALLOC_AT=N   the Nth counted allocation fails
#   CIVIS_COUNT_ALLOCS=PATH the count is written there at exit
# tests/torture/run.sh drives it; TORTURE_ARGS passes options to it
# (e.g. TORTURE_ARGS="--max-points 500 --only agent").
.PHONY: torture torture-build
TORT_DIR     := build/torture
TORT_CC      ?= $(CC)
TORT_FLAGS   := $(WARN) -O1 -g -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=all \
                -DCIVIS_UNITTEST -DCIVIS_TORTURE $(PKG_CFLAGS)
TORT_SYMS    := $(TORT_DIR)/wrap.syms
TORT_LIB_OBJ := $(LIB_SRC:%.c=$(TORT_DIR)/obj/%.o)
TORT_AG_OBJ  := $(filter-out $(TORT_DIR)/obj/agent/main.o,$(AGENT_SRC:%.c=$(TORT_DIR)/obj/%.o))
TORT_ALLOC   := $(TORT_DIR)/obj/tests/torture/torture_alloc.o
# The unit programs that are fast enough (no long soak, no network waits)
# to run once per allocation.
TORT_UNITS   ?= linebuf logbatch logqueue redact client options upload loop sha256 tls
TORT_UNIT_BIN := $(TORT_UNITS:%=$(TORT_DIR)/tests/test_%)
TORT_DRIVER  := $(TORT_DIR)/tests/torture_driver
TORT_AGENT   := $(TORT_DIR)/civis-agent
TORTURE_ARGS ?=

$(TORT_SYMS): mk/torture.mk
	@mkdir -p $(dir $@)
	printf '%s\n' 'malloc civis_torture_malloc' 'calloc civis_torture_calloc' \
	    'realloc civis_torture_realloc' 'strdup civis_torture_strdup' \
	    'strndup civis_torture_strndup' > $@

# Our objects: compiled, then their allocation calls renamed.
$(TORT_DIR)/obj/%.o: %.c $(TORT_SYMS)
	@mkdir -p $(dir $@)
	$(TORT_CC) $(CPPFLAGS) $(TORT_FLAGS) -MMD -MP -c -o $@.raw $<
	objcopy --redefine-syms=$(TORT_SYMS) $@.raw $@
	rm -f $@.raw

# The allocator itself and the test programs' own code are not renamed.
$(TORT_ALLOC): tests/torture/torture_alloc.c tests/torture/torture_alloc.h
	@mkdir -p $(dir $@)
	$(TORT_CC) $(CPPFLAGS) $(TORT_FLAGS) -c -o $@ $<

$(TORT_DIR)/tests/test_%: tests/unit/test_%.c $(TORT_LIB_OBJ) $(TORT_AG_OBJ) $(TORT_ALLOC)
	@mkdir -p $(dir $@)
	$(TORT_CC) $(CPPFLAGS) $(TORT_FLAGS) -o $@ $< $(TORT_AG_OBJ) $(TORT_LIB_OBJ) $(TORT_ALLOC) \
	    $(LDFLAGS) $(PKG_LIBS) -lcmocka

$(TORT_DRIVER): tests/torture/driver.c $(TORT_LIB_OBJ) $(TORT_AG_OBJ) $(TORT_ALLOC)
	@mkdir -p $(dir $@)
	$(TORT_CC) $(CPPFLAGS) -Iagent $(TORT_FLAGS) -o $@ $< $(TORT_AG_OBJ) $(TORT_LIB_OBJ) \
	    $(TORT_ALLOC) $(LDFLAGS) $(PKG_LIBS)

$(TORT_AGENT): $(TORT_DIR)/obj/agent/main.o $(TORT_AG_OBJ) $(TORT_LIB_OBJ) $(TORT_ALLOC)
	$(TORT_CC) $(TORT_FLAGS) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

torture-build: $(TORT_UNIT_BIN) $(TORT_DRIVER) $(TORT_AGENT)

torture: torture-build
	@bash tests/torture/run.sh --build $(TORT_DIR) --units "$(TORT_UNITS)" $(TORTURE_ARGS)

-include $(TORT_LIB_OBJ:.o=.d) $(TORT_AG_OBJ:.o=.d) $(TORT_DIR)/obj/agent/main.d
