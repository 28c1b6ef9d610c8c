#!/usr/bin/env python3
"""test_process.py: what the agent does to the command's processes and
says about how they ended, build/civis-agent (not PID 1: a subreaper)
against the simulator (tests/sim/harness.py).

- Leftovers: a daemon that called setsid (outside the command's process
  group) gets SIGTERM when the command exits and SIGKILL after the grace
  period; it is gone, reaped, when the agent exits; the run log has the
  agent's exact notes.
- A command that cannot be started: the reason ("cannot run 'x': No such
  file or directory") is one error line in the run log as well as on
  stderr, before the summary; exit 127 / 126.

    python3 tests/integration/run.py test_process.py
    python3 tests/integration/test_process.py [-v] [ProcessTest.test_x]"""

import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import util  # noqa: E402
from harness import SimHarness  # noqa: E402

LEFT = ("civis-agent: the command exited and left 1 process running: sending SIGTERM, "
        "SIGKILL after 1.0 s")
OUTLIVED = "civis-agent: the command's processes outlived the grace period (1.0 s): sending SIGKILL"


def proc_running(pid):
    """pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return st != "Z"


class ProcessBase(unittest.TestCase):
    sim = None

    @classmethod
    def setUpClass(cls):
        why = util.missing(need_flood=False)
        if why:
            raise unittest.SkipTest(why)
        cls.sim = SimHarness()
        cls.sim.start()

    @classmethod
    def tearDownClass(cls):
        if cls.sim:
            cls.sim.stop()

    def setUp(self):
        self.sim.reset()
        self.tmp = tempfile.mkdtemp(prefix="civis-process-")
        self.strays = []

    def tearDown(self):
        for pid in self.strays:     # what a broken agent let escape
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_agent(self, args, **kw):
        kw.setdefault("timeout", 60)
        return self.sim.run_agent(args, **kw)

    def messages(self):
        return [(r["message"], r["level"])
                for r in sorted(self.sim.logs(), key=lambda r: r["createdAt"])]


class ProcessTest(ProcessBase):

    def leftover_case(self, daemon, want):
        """The command starts `daemon` (a shell snippet) under setsid, waits
        until it has written its pid, and exits 3."""
        pidfile = os.path.join(self.tmp, "daemon.pid")
        script = ('setsid sh -c \'echo $$ > "$1"; %s\' sh "$1" & '
                  'i=0; while [ ! -s "$1" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; '
                  'echo started; exit 3' % daemon)
        t0 = time.monotonic()
        r = self.run_agent(["--grace-period", "1s", "--", "sh", "-c", script, "sh", pidfile])
        took = time.monotonic() - t0
        with open(pidfile) as f:
            pid = int(f.read())
        self.strays.append(pid)
        self.assertEqual(r.returncode, 3, r)
        self.assertFalse(os.path.exists("/proc/%d" % pid) and proc_running(pid),
                         "the setsid'ed daemon outlived the agent")
        self.assertFalse(os.path.exists("/proc/%d" % pid),
                         "the daemon was not reaped by the agent (a zombie of init now)")
        msgs = self.messages()
        for line in want:
            self.assertIn(line, r.stderr.decode(), r)
            self.assertIn((line, "warn"), msgs)
        # The notes stand before the run summary.
        summary = [i for i, (m, _) in enumerate(msgs) if m.startswith("civis-agent: command ")]
        self.assertEqual(len(summary), 1, msgs)
        self.assertLess(msgs.index((want[-1], "warn")), summary[0])
        return took

    def test_setsid_daemon_gets_sigterm_when_the_command_exits(self):
        took = self.leftover_case("exec sleep 1000", [LEFT])
        self.assertLess(took, 10, "not killed at once")

    def test_setsid_daemon_ignoring_sigterm_is_killed_after_the_grace_period(self):
        took = self.leftover_case('trap "" TERM; exec sleep 1000', [LEFT, OUTLIVED])
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 15)

    def test_no_note_when_nothing_is_left(self):
        r = self.run_agent(["--grace-period", "1s", "--", "sh", "-c", "echo hi; exit 0"])
        self.assertEqual(r.returncode, 0, r)
        self.assertNotIn("left", r.stderr.decode())
        self.assertFalse(any("left 1 process" in m for m, _ in self.messages()))


class StartFailureTest(ProcessBase):
    """Why the command could not start is in the run log too, not only on
    stderr: one error line, exact, once, before the summary."""

    def start_case(self, cmd, code, line):
        r = self.run_agent(["--", cmd, "arg"])
        self.assertEqual(r.returncode, code, r)
        self.assertEqual(r.stdout, b"")
        err = r.stderr.decode().splitlines()
        self.assertEqual(err.count(line), 1, r)
        msgs = self.messages()
        self.assertEqual([m for m in msgs if m[0] == line], [(line, "error")], msgs)
        summary = [m for m, _ in msgs if m.startswith("civis-agent: command ")]
        self.assertEqual(len(summary), 1, msgs)
        self.assertTrue(summary[0].startswith("civis-agent: command exited with status %d;" % code),
                        summary)
        self.assertLess(msgs.index((line, "error")), msgs.index((summary[0], "info")))

    def test_missing_command_reason_in_run_log(self):
        self.start_case("civis-no-such-command-xyz", 127,
                        "civis-agent: cannot run 'civis-no-such-command-xyz': No such file or "
                        "directory")

    def test_directory_reason_in_run_log(self):
        self.start_case(self.tmp, 126, "civis-agent: cannot run '%s': Is a directory" % self.tmp)

    def test_not_executable_reason_in_run_log(self):
        path = os.path.join(self.tmp, "noexec")
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, 0o644)
        self.start_case(path, 126, "civis-agent: cannot run '%s': Permission denied" % path)


if __name__ == "__main__":
    unittest.main()
