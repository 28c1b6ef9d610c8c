# make sim-test: the Civis API simulator's own tests (tests/sim/test_sim.py),
# with Prism in front for the contract part (installed by `make prism`).
# SIM_FLOOD_LINES sets the log-flood measurement (default 1,000,000 lines).
# make sim: run the simulator in the foreground (SIM_ARGS for more options).
.PHONY: sim-test sim
PYTHON ?= python3
SIM_ARGS ?=

sim-test: prism
	$(PYTHON) tests/sim/test_sim.py

sim:
	$(PYTHON) tests/sim/civis_sim.py --port 0 --storage-port 0 --api-key sim-key $(SIM_ARGS)

# make sim-storage-speed: the storage side alone against a trivial sink (curl -F
# and curl -T of 300 MB and 1 GiB; SPEED_ARGS e.g. "--runs 5 --sim-args='--etag md5'").
.PHONY: sim-storage-speed
SPEED_ARGS ?= --runs 3
sim-storage-speed:
	$(PYTHON) tests/sim/storage_speed.py $(SPEED_ARGS)
