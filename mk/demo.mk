# make demo: on a fresh machine, install what is missing (deps, mk/deps.mk),
# build the agent, start the API simulator, run examples/hello and
# examples/python under the agent, and print what the API received (run log,
# heartbeats, outputs). The simulator is stopped at the end.
.PHONY: demo
PYTHON ?= python3

demo: deps
	@$(MAKE) --no-print-directory -s agent
	@$(PYTHON) examples/demo.py --agent $(AGENT)
