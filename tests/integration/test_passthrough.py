#!/usr/bin/env python3
"""test_passthrough.py: without the Civis API, with the tee on, nothing to
mask in it (no --redact-tee) and no termination log, nothing in the agent
needs the command's output: the command gets the agent's own stdout and
stderr, the very same open files (no pipes, no copy), as under tini.
build/civis-agent, not PID 1 (a subreaper); tests/pid1/run.sh scenario 17
does the same as PID 1.

- The command's fd 1 and fd 2 are the files (or the pipe) the test gave
  the agent; with --redact-tee, an existing --termination-log, --no-tee or
  the API on they are pipes of the agent's.
- 10 MB of random bytes through stdout (and 1 MB through stderr) arrive
  byte exact.
- The agent stays a correct supervisor: the command's exit status, a
  SIGTERM forwarded (143), processes the command left get SIGTERM and
  their grace period (SIGKILL after it), and are reaped.
- -v says once that the output goes straight through.

    python3 tests/integration/run.py test_passthrough.py
    python3 tests/integration/test_passthrough.py [-v] [PassThroughTest.test_x]"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import util  # noqa: E402
from harness import SimHarness, _kill_group, _spawn, agent_path  # noqa: E402

NO_API_NOTE = ("civis-agent: CIVIS_API_KEY, CIVIS_JOB_ID and CIVIS_RUN_ID are not set: running "
               "the command without the Civis API (output is only copied through)")
STRAIGHT_NOTE = ("civis-agent: the command's output goes straight to the agent's stdout and "
                 "stderr (nothing to stream, mask or keep)")

# The command's fd 1 and 2 as it sees them: where /proc says they point, and
# the device and inode of the open file, into the file named by argv[1].
PROBE = r"""
import json, os, sys
r = {}
for fd in (1, 2):
    st = os.fstat(fd)
    r[str(fd)] = [os.readlink("/proc/self/fd/%d" % fd), st.st_dev, st.st_ino]
with open(sys.argv[1], "w") as f:
    json.dump(r, f)
"""


def no_api_env(extra=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CIVIS_")}
    e.update(extra or {})
    return e


class PassThroughBase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        why = util.missing(need_flood=False)
        if why:
            raise unittest.SkipTest(why)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="civis-pass-")
        self.out_path = os.path.join(self.tmp, "agent.out")
        self.err_path = os.path.join(self.tmp, "agent.err")
        self.report = os.path.join(self.tmp, "report.json")
        self.strays = []

    def tearDown(self):
        for pid in self.strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def probe_cmd(self, then=""):
        """sh -c: the probe, then `then` (shell text; $2 is the tmp dir)."""
        return ["sh", "-c", '"$0" -c "$1" "$2/report.json"' + (" && " + then if then else ""),
                sys.executable, PROBE, self.tmp]

    def start(self, args, env, stdout=None):
        """The agent in the background, stdout to `stdout` (an fd) or
        agent.out, stderr to agent.err."""
        out = open(self.out_path, "wb")
        err = open(self.err_path, "wb")
        try:
            return _spawn([agent_path()] + list(args), stdin=subprocess.DEVNULL,
                          stdout=stdout if stdout is not None else out, stderr=err, env=env)
        finally:
            out.close()
            err.close()

    def finish(self, p, timeout=60):
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(p, grace=1.0)
            raise AssertionError("agent did not exit within %.0f s: %s" % (timeout, self.stderr()))
        finally:
            _kill_group(p, grace=0)

    def run_agent(self, args, env=None, timeout=60):
        """Run to the end; (exit status, wall seconds)."""
        t0 = time.monotonic()
        rc = self.finish(self.start(args, env if env is not None else no_api_env()), timeout)
        return rc, time.monotonic() - t0

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read()

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def clear_report(self):
        if os.path.exists(self.report):
            os.unlink(self.report)

    def fds(self):
        with open(self.report) as f:
            return json.load(f)

    def assert_straight(self, out_path=None, err_path=None):
        """The command's fd 1 and 2 were the agent's own files."""
        r = self.fds()
        for fd, path in (("1", out_path or self.out_path), ("2", err_path or self.err_path)):
            st = os.stat(path)
            self.assertEqual(r[fd], [path, st.st_dev, st.st_ino], (fd, r))

    def assert_pipes(self):
        """The command's fd 1 and 2 were pipes (the agent's: it got files)."""
        r = self.fds()
        for fd in ("1", "2"):
            self.assertRegex(r[fd][0], r"^pipe:\[\d+\]$", (fd, r))
        self.assertNotEqual(r["1"][0], r["2"][0], r)


class PassThroughTest(PassThroughBase):

    def test_no_api_command_writes_to_the_agents_own_files(self):
        rc, _ = self.run_agent(["--"] + self.probe_cmd("exit 7"))
        self.assertEqual(rc, 7, self.stderr())
        self.assert_straight()
        self.assertEqual(self.stderr(), NO_API_NOTE + "\n")

    def test_termination_log_missing_or_off_still_straight(self):
        missing = os.path.join(self.tmp, "no-such-termination-log")
        for tl in (missing, ""):
            with self.subTest(termination_log=tl):
                self.clear_report()
                rc, _ = self.run_agent(["--termination-log", tl, "--"] + self.probe_cmd())
                self.assertEqual(rc, 0, self.stderr())
                self.assert_straight()
        self.assertFalse(os.path.exists(missing), "never created")

    def test_no_api_pipe_is_the_very_same_pipe(self):
        # `civis-agent -- cmd | cat`: the command writes into that pipe itself
        r, w = os.pipe()
        try:
            p = self.start(["--"] + self.probe_cmd("printf hello"), no_api_env(), stdout=w)
            os.close(w)
            w = -1
            got = b""
            while True:
                b = os.read(r, 65536)
                if not b:
                    break
                got += b
            rc = self.finish(p)
            st = os.fstat(r)
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        self.assertEqual(rc, 0, self.stderr())
        self.assertEqual(got, b"hello")
        self.assertEqual(self.fds()["1"][0], "pipe:[%d]" % st.st_ino)
        self.assertEqual(self.fds()["1"][2], st.st_ino)

    def test_what_needs_the_output_keeps_the_pipes(self):
        termlog = os.path.join(self.tmp, "termination-log")
        open(termlog, "w").close()
        cases = {
            "--redact-tee": ["--redact-tee"],
            "existing --termination-log": ["--termination-log", termlog],
            "--no-tee": ["--no-tee"],
        }
        for name, args in cases.items():
            with self.subTest(name):
                self.clear_report()
                rc, _ = self.run_agent(args + ["--"] + self.probe_cmd("echo out; exit 4"))
                self.assertEqual(rc, 4, self.stderr())
                self.assert_pipes()
                self.assertEqual(self.stdout(), b"" if name == "--no-tee" else b"out\n")
        # the termination log got its summary, as before
        with open(termlog) as f:
            self.assertRegex(f.read(), r"^civis-agent: command exited with status 4; .*"
                                       r"streamed 0 lines, 4 bytes\n$")

    def test_output_is_byte_exact(self):
        a = os.path.join(self.tmp, "a.bin")
        b = os.path.join(self.tmp, "b.bin")
        with open(a, "wb") as f:
            f.write(os.urandom(10 << 20))
        with open(b, "wb") as f:
            # starts with a NUL: cannot be taken for one of the agent's notes
            f.write(b"\0" + os.urandom(1 << 20) + b"no newline")
        rc, _ = self.run_agent(["--"] + self.probe_cmd('cat "$2/b.bin" >&2 & cat "$2/a.bin"; wait'))
        self.assertEqual(rc, 0, self.stderr())
        self.assert_straight()
        with open(a, "rb") as f:
            want_out = hashlib.sha256(f.read()).hexdigest()
        with open(b, "rb") as f:
            want_err = hashlib.sha256(f.read()).hexdigest()
        self.assertEqual(hashlib.sha256(self.stdout()).hexdigest(), want_out)
        with open(self.err_path, "rb") as f:
            err = f.read()
        note = NO_API_NOTE.encode() + b"\n"
        self.assertTrue(err.startswith(note), err[:200])
        self.assertEqual(hashlib.sha256(err[len(note):]).hexdigest(), want_err)

    def test_verbose_says_straight_through_once(self):
        rc, _ = self.run_agent(["-v", "--"] + self.probe_cmd("exit 3"))
        self.assertEqual(rc, 3)
        self.assert_straight()
        err = self.stderr().splitlines()
        self.assertEqual(err.count(STRAIGHT_NOTE), 1, err)
        self.assertLess(err.index(NO_API_NOTE), err.index(STRAIGHT_NOTE))
        summary = [ln for ln in err if ln.startswith("civis-agent: command ")]
        self.assertEqual(len(summary), 1, err)
        self.assertRegex(summary[0], r"^civis-agent: command exited with status 3; wall time "
                                     r"[0-9.]+ s, .*; output straight through, not read$")
        # not said when the pipes are kept
        rc, _ = self.run_agent(["-v", "--redact-tee", "--"] + self.probe_cmd())
        self.assertEqual(rc, 0)
        self.assertNotIn(STRAIGHT_NOTE, self.stderr())
        self.assertIn("streamed 0 lines, 0 bytes", self.stderr())

    def test_sigterm_is_forwarded(self):
        ready = os.path.join(self.tmp, "ready")
        p = self.start(["--"] + self.probe_cmd(': > "$2/ready"; exec sleep 30'), no_api_env())
        try:
            util.wait_until(lambda: os.path.exists(ready), 30, what="the command")
            p.send_signal(signal.SIGTERM)
        finally:
            rc = self.finish(p, timeout=30)
        self.assertEqual(rc, 143, self.stderr())
        self.assert_straight()

    def leftover(self, daemon, grace="1s"):
        """The command starts `daemon` (shell text, $1 the tmp dir) under
        setsid with its output on /dev/null, waits for its pid and exits 3;
        (wall seconds, the daemon's pid)."""
        pidfile = os.path.join(self.tmp, "daemon.pid")
        script = ('setsid sh -c \'echo $$ > "$1/daemon.pid"; %s\' sh "$2" >/dev/null 2>&1 & '
                  'i=0; while [ ! -s "$2/daemon.pid" ] && [ $i -lt 1000 ]; do sleep 0.01; '
                  'i=$((i+1)); done; exit 3' % daemon)
        rc, took = self.run_agent(["--grace-period", grace, "--"] + self.probe_cmd(script))
        with open(pidfile) as f:
            pid = int(f.read())
        self.strays.append(pid)
        self.assertEqual(rc, 3, self.stderr())
        self.assert_straight()
        self.assertFalse(os.path.exists("/proc/%d" % pid),
                         "the daemon outlived the agent, or was not reaped (running: %s)"
                         % util.proc_running(pid))
        return took

    def test_leftover_gets_its_grace_period_to_end(self):
        # No pipe to wait for: the agent waits for what the command left
        # (SIGTERM at once), so a clean shutdown can finish.
        took = self.leftover('trap "sleep 0.5; echo cleaned > \\"\\$1/cleaned\\"; exit 0" TERM; '
                             'while :; do sleep 1; done', grace="10s")
        self.assertLess(took, 8, "waited for the whole grace period")
        with open(os.path.join(self.tmp, "cleaned")) as f:
            self.assertEqual(f.read(), "cleaned\n")
        # the shell and its sleep
        self.assertIn("civis-agent: the command exited and left 2 processes running: sending "
                      "SIGTERM, SIGKILL after 10.0 s\n", self.stderr())

    def test_leftover_ignoring_sigterm_is_killed_after_the_grace_period(self):
        took = self.leftover('trap "" TERM; exec sleep 1000')
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 15)
        self.assertIn("civis-agent: the command's processes outlived the grace period (1.0 s): "
                      "sending SIGKILL\n", self.stderr())

    def test_exits_as_soon_as_the_command_has_exited(self):
        rc, took = self.run_agent(["--", "sh", "-c", "exit 5"])
        self.assertEqual(rc, 5)
        self.assertLess(took, 2)


class PipesWithApiTest(PassThroughBase):
    """With the API on the agent reads every byte: pipes, as always."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sim = SimHarness()
        cls.sim.start()

    @classmethod
    def tearDownClass(cls):
        cls.sim.stop()

    def test_api_on_keeps_the_pipes(self):
        self.sim.reset()
        rc, _ = self.run_agent(["--"] + self.probe_cmd("echo streamed"), env=self.sim.env())
        self.assertEqual(rc, 0, self.stderr())
        self.assert_pipes()
        self.assertEqual(self.stdout(), b"streamed\n")
        self.assertIn("streamed", [r["message"] for r in self.sim.logs()])


if __name__ == "__main__":
    unittest.main()
