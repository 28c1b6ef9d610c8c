"""Issue 12: no secret leaks and nothing outside its place is touched, under
the way real jobs write output and under a hostile command.

Each case is named after what it proves and asserts exactly what the API
received and what stderr said. Run with tests/integration/run.py."""
import json
import os
import random
import shlex
import string
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))
import harness  # noqa: E402
from harness import SimHarness  # noqa: E402

QUICK = os.environ.get("CIVIS_TEST_QUICK") == "1"
PY = sys.executable or "python3"

# A piece of a secret this long that is not in the ordinary text of a test
# is a leak (issue 12: no piece of any secret of 8 bytes or more).
PIECE = 4


def pieces(secret, ordinary, n=PIECE):
    """Every n-byte piece of secret that does not occur in the ordinary text."""
    return sorted({secret[i:i + n] for i in range(len(secret) - n + 1)} -
                  {ordinary[i:i + n] for i in range(len(ordinary) - n + 1)})


class SecurityTest(unittest.TestCase):
    sim = None

    @classmethod
    def setUpClass(cls):
        if not os.access(harness.agent_path(), os.X_OK):
            raise unittest.SkipTest("no agent binary at %s (run make)" % harness.agent_path())
        cls.sim = SimHarness()
        cls.sim.start()

    @classmethod
    def tearDownClass(cls):
        if cls.sim:
            cls.sim.stop()

    def setUp(self):
        self.sim.reset()

    def messages(self):
        return [l["message"] for l in sorted(self.sim.logs(), key=lambda l: l["createdAt"])]

    def command_messages(self):
        return [m for m in self.messages() if not m.startswith("civis-agent: ")]

    def python(self, args, code, env=None, timeout=60):
        """Run the agent on `python3 -c code` (stdout a pipe: block-buffered)."""
        return self.sim.run_agent(list(args) + ["--", PY, "-c", code],
                                  env=self.sim.env(env or {}), timeout=timeout)

    def assert_no_piece(self, secret, ordinary, msgs):
        bad = [(p, m) for p in pieces(secret, ordinary) for m in msgs if p in m]
        self.assertEqual(bad, [], "a piece of the secret %r reached the run log" % secret)

    # ------------------------------------------------------------ point 9: a stalled stdout

    def test_stalled_stdout_reader_does_not_freeze_the_agent(self):
        # stdout's reader sleeps 4 s: heartbeats go on every second (gap at
        # most 1.5 intervals), the command simply waits on its pipe, and the
        # copy that finally comes out is byte exact.
        n = 200000   # ~1.3 MB: far more than the pipes hold
        cmd = "%s --heartbeat-interval 1s -- seq 1 %d | (sleep 4; cat)" % (
            shlex.quote(harness.agent_path()), n)
        r = self.sim.run_command(["sh", "-c", cmd], env=self.sim.env(), timeout=90)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout, b"".join(b"%d\n" % i for i in range(1, n + 1)))
        self.assertEqual(r.stderr, b"")
        hb = self.sim.heartbeats()
        gaps = [b["mono"] - a["mono"] for a, b in zip(hb, hb[1:])]
        self.assertGreaterEqual(len(hb), 4, hb)
        self.assertLessEqual(max(gaps), 1.5, gaps)
        self.assertEqual(self.command_messages(), [str(i) for i in range(1, n + 1)])

    def test_stdout_shared_with_others_stays_blocking(self):
        # The agent's stdout pipe is shared with a sibling in the pipeline:
        # the sibling's file description must not turn non-blocking, during
        # the agent's run or after it.
        flags = (PY + " -c 'import fcntl, os; "
                 "print(\"nonblock=%d\" % bool(fcntl.fcntl(1, fcntl.F_GETFL) & os.O_NONBLOCK))'")
        cmd = ("(%s -- sh -c 'echo from-agent; sleep 1.5' & sleep 0.7; %s; wait; %s) | cat" %
               (shlex.quote(harness.agent_path()), flags, flags))
        r = self.sim.run_command(["sh", "-c", cmd], env=self.sim.env(), timeout=60)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout, b"from-agent\nnonblock=0\nnonblock=0\n")


if __name__ == "__main__":
    unittest.main()
