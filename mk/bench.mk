# make bench: the project's figures, side by side, in one run (tests/bench/bench.py).
#   make bench BENCH=startup,flood   a subset: startup tee flood latency slowapi redact
#                                    upload small updur outage layer pid1 image
#   make bench BENCH_QUICK=1         smaller sizes (a smoke run)
#   make bench CIVIS_AGENT=/path/to/civis-agent
#                                    measure another build of the agent (the
#                                    tools, the simulator and bench_redact stay
#                                    this tree's; default: this tree's build)
# Results go to stdout (a table at the end); large temp files to build/bench/
# (removed by make clean). Nothing here asserts a timing; a lost line or a
# corrupted upload prints FAIL and fails the target.
.PHONY: bench
PYTHON ?= python3
BENCH ?=
BENCH_QUICK ?=
CIVIS_AGENT ?= $(abspath $(AGENT))
BENCH_REDACT := build/bench_redact
BENCH_REDACT_SRC := lib/src/redact_build.c lib/src/redact_match.c lib/src/status.c

$(BENCH_REDACT): tests/bench/bench_redact.c $(BENCH_REDACT_SRC) lib/src/redact_int.h \
                 lib/include/civis/redact.h lib/include/civis/civis.h
	@mkdir -p $(dir $@)
	$(CC) -O2 -D_GNU_SOURCE -Ilib/include -Ilib/src tests/bench/bench_redact.c \
	    $(BENCH_REDACT_SRC) -o $@

bench: all tools $(BENCH_REDACT)
	BENCH='$(BENCH)' BENCH_QUICK='$(BENCH_QUICK)' CIVIS_AGENT='$(abspath $(CIVIS_AGENT))' \
	    $(PYTHON) tests/bench/bench.py
