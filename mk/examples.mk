# make examples-test: every example's script under build/civis-agent against
# the API simulator (not the Docker build): log lines and levels, outputs
# registered with the SHA-256 of what the job wrote, exit status; plus static
# checks of the examples' Dockerfiles and Kubernetes manifest.
# Prints "N passed, N failed".
.PHONY: examples-test
PYTHON ?= python3

examples-test: $(AGENT)
	CIVIS_AGENT=$(abspath $(AGENT)) $(PYTHON) examples/test_examples.py
