# make fuzz: every tests/fuzz/fuzz_*.c is a libFuzzer target, linked with the
# whole library and the agent's modules (but main.c), all built with clang
# under ASan+UBSan. Each runs FUZZ_TIME seconds from its seed corpus
# tests/fuzz/corpus/<name>/ (new finds go to build/fuzz/corpus/<name>/ so the
# tree stays clean). `make check` runs each for 30 s.
.PHONY: fuzz fuzz-build
FUZZ_TIME ?= 10
FUZZ_DIR  := build/fuzz
FUZZ_CC   := clang
FUZZ_FLAGS := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
              -fno-sanitize-recover=all -std=c11 -D_GNU_SOURCE -DCIVIS_UNITTEST \
              -DCIVIS_VERSION='"$(VERSION)"' -Ilib/include -Iagent $(PKG_CFLAGS)
FUZZ_SRC  := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN  := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_DIR)/%)
FUZZ_OBJ  := $(LIB_SRC:%.c=$(FUZZ_DIR)/obj/%.o) \
             $(filter-out $(FUZZ_DIR)/obj/agent/main.o,$(AGENT_SRC:%.c=$(FUZZ_DIR)/obj/%.o))

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -c -o $@ $<

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(PKG_LIBS)

fuzz-build: $(FUZZ_BIN)

fuzz: fuzz-build
	@set -e; for t in $(FUZZ_BIN); do \
	    n=$$(basename $$t); n=$${n#fuzz_}; \
	    mkdir -p $(FUZZ_DIR)/corpus/$$n tests/fuzz/corpus/$$n; \
	    echo "== fuzz $$n for $(FUZZ_TIME) s"; \
	    rc=0; $$t -max_total_time=$(FUZZ_TIME) -print_final_stats=1 -rss_limit_mb=2048 \
	        -timeout=10 -artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus/$$n tests/fuzz/corpus/$$n \
	        > $(FUZZ_DIR)/$$n.log 2>&1 || rc=$$?; \
	    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|Done)' \
	        $(FUZZ_DIR)/$$n.log || true; \
	    if [ $$rc -ne 0 ]; then tail -40 $(FUZZ_DIR)/$$n.log; echo "fuzz $$n: FAILED"; exit 1; fi; \
	done

# keep the instrumented objects between runs
.SECONDARY: $(FUZZ_OBJ)
