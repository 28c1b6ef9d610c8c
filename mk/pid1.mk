# make pid1: the PID-1 suite (tests/pid1/run.sh) against $(AGENT), each
# scenario as PID 1 of a new PID namespace and as a plain subreaper.
# SAN=1 runs it on the sanitizer build. pid1-valgrind runs it with the agent
# under valgrind memcheck (logs checked by the suite: scenario 12).
#   make pid1 PID1_MODES=plain     one mode only
#   make pid1 PID1_TEE_MB=5        a smaller byte-exact tee test
.PHONY: pid1 pid1-valgrind
PID1_MODES  ?= pid1 plain
PID1_TEE_MB ?= 50
PID1_VALGRIND ?= valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite

pid1: $(AGENT)
	MODES='$(PID1_MODES)' TEE_MB='$(PID1_TEE_MB)' CC='$(CC)' tests/pid1/run.sh $(AGENT)

pid1-valgrind: $(AGENT)
	MODES='$(PID1_MODES)' TEE_MB='$(PID1_TEE_MB)' CC='$(CC)' RUNNER='$(PID1_VALGRIND)' \
	    tests/pid1/run.sh $(AGENT)
