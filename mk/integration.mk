# make integration: the real agent against the simulator over loopback
# (and through Prism where a test asks for it: `make prism` first, and a
# Prism test fails, not skips, without it). SAN=1 runs the sanitizer
# build; integration-valgrind runs the quick tests under valgrind memcheck.
.PHONY: integration integration-valgrind
INTEGRATION ?=
integration: $(AGENT) tools prism
	CIVIS_AGENT=$(abspath $(AGENT)) python3 tests/integration/run.py $(INTEGRATION)

# The wrapper names the real binary itself: tests that run the agent with
# an environment of their own must still get valgrind.
build/valgrind/civis-agent: tests/integration/valgrind-agent.sh tests/integration/valgrind.supp $(AGENT)
	@mkdir -p $(dir $@)
	sed 's|@AGENT@|$(abspath $(AGENT))|; s|@SUPP@|$(abspath tests/integration/valgrind.supp)|' $< > $@ && chmod +x $@

integration-valgrind: $(AGENT) tools prism build/valgrind/civis-agent
	CIVIS_AGENT=$(abspath build/valgrind/civis-agent) CIVIS_TEST_QUICK=1 \
	    CIVIS_REAL_AGENT=$(abspath $(AGENT)) python3 tests/integration/run.py $(INTEGRATION)
