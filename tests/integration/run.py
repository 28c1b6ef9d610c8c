#!/usr/bin/env python3
"""Run the integration suites (tests/integration/test_*.py, or the files
named) against the real agent and the simulator, and close with
"N passed, N failed, N skipped".

CIVIS_AGENT picks the binary (default build/civis-agent); with
CIVIS_TEST_QUICK=1 the long scenarios skip themselves (valgrind runs)."""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "sim"))


def main(argv):
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    names = argv or sorted(f for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
    for n in names:
        mod = os.path.splitext(os.path.basename(n))[0]
        suite.addTests(loader.loadTestsFromName(mod))
    res = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    skipped = len(res.skipped)
    passed = res.testsRun - failed - skipped
    print("integration: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed or res.testsRun == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
