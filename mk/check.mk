# make check: everything, in the order a failure is cheapest to find.
# tests/run-all.sh runs each stage, keeps going, and closes with
# "N passed, N failed" (stages), exiting non-zero if any failed.
.PHONY: check
check: deps
	@bash tests/run-all.sh
