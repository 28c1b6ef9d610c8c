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
- Exit reasons: the container's memory limit (and peak) and CPU quota in
  the summary; a command killed by the kernel's OOM killer gets the
  platform's error line "Process ran out of its allowed 64 MiB of memory
  and was killed." (a fake cgroup tree under --cgroup-root, and a real OOM
  in a child cgroup where the host allows one, else skipped with the
  reason); the termination log gets the last error lines of the run log
  (masked) and the summary.

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
        self.assertFalse(os.path.exists("/proc/%d" % pid) and util.proc_running(pid),
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


OOM_LINE = "Process ran out of its allowed 64 MiB of memory and was killed."
LIMITS = "memory limit 64 MiB (peak 64.0 MiB), CPU quota 1.50 CPUs"
SUMMARY = (r"^civis-agent: command (?:exited with status \d+|was killed by signal \d+ \(SIG\w+\)); "
           r"wall time [0-9.]+ s, CPU [0-9.]+ s \(user [0-9.]+ s, system [0-9.]+ s\), peak RSS "
           r"[0-9.]+ MiB; streamed \d+ lines, \d+ bytes")


class ExitReasonTest(ProcessBase):
    """The container's limits in the summary, an OOM kill said in the
    platform's words, the termination log; a fake cgroup v2 tree under
    --cgroup-root stands for the container's (the command itself moves the
    kernel's oom_kill count, as the kernel would)."""

    def setUp(self):
        super().setUp()
        self.cg = os.path.join(self.tmp, "cgroup")
        os.mkdir(self.cg)
        for name, text in (("cgroup.controllers", "cpu memory\n"), ("memory.max", "67108864\n"),
                           ("memory.peak", "67108864\n"), ("cpu.max", "150000 100000\n"),
                           ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")):
            with open(os.path.join(self.cg, name), "w") as f:
                f.write(text)
        self.termlog = os.path.join(self.tmp, "termination-log")
        with open(self.termlog, "w") as f:
            f.write("stale\n")

    def run_in_cgroup(self, script):
        # The agent reads the count to compare with right after the spawn
        # (the command does not wait for it): a real OOM takes longer than
        # that; the stand-in waits.
        return self.run_agent(["--cgroup-root", self.cg, "--termination-log", self.termlog,
                               "--", "sh", "-c", "sleep 0.5; " + script, "sh", self.cg])

    def summary(self):
        msgs = self.messages()
        s = [(i, m, lv) for i, (m, lv) in enumerate(msgs) if m.startswith("civis-agent: command ")]
        self.assertEqual(len(s), 1, msgs)
        self.assertEqual(s[0][2], "info")
        self.assertRegex(s[0][1], SUMMARY)
        return s[0][0], s[0][1], msgs

    def termlog_lines(self):
        with open(self.termlog) as f:
            return f.read().splitlines()

    def test_oom_kill_in_platform_words(self):
        r = self.run_in_cgroup('echo "boom" >&2; echo "oom 1" > "$1/memory.events"; '
                               'echo "oom_kill 1" >> "$1/memory.events"; kill -KILL $$')
        self.assertEqual(r.returncode, 137, r)
        i, summary, msgs = self.summary()
        self.assertEqual([k for k, m in enumerate(msgs) if m == (OOM_LINE, "error")], [i - 1], msgs)
        self.assertTrue(summary.endswith("; " + LIMITS + ". " + OOM_LINE), summary)
        self.assertIn("civis-agent: command was killed by signal 9 (SIGKILL);", summary)
        self.assertIn("civis-agent: " + OOM_LINE + "\n", r.stderr.decode())
        # The last error lines of the run log, then the summary.
        self.assertEqual(self.termlog_lines(), ["boom", OOM_LINE, summary])

    def test_termination_log_has_masked_last_errors(self):
        secret = "Sup3rS3cretValue"
        script = ('for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "trace $i" >&2; done; '
                  'echo "failed with %s" >&2; echo "out"; exit 1' % secret)
        r = self.run_agent(["--cgroup-root", self.cg, "--termination-log", self.termlog, "--",
                            "sh", "-c", script], extra_env={"MY_TOKEN": secret})
        self.assertEqual(r.returncode, 1, r)
        _, summary, msgs = self.summary()
        errors = [m for m, lv in msgs if lv == "error"]
        self.assertEqual(len(errors), 13, msgs)
        self.assertNotIn(secret, errors[-1])
        lines = self.termlog_lines()
        self.assertEqual(lines, errors[-10:] + [summary])
        with open(self.termlog, "rb") as f:
            self.assertNotIn(secret.encode(), f.read())

    def test_limits_in_summary(self):
        r = self.run_in_cgroup("echo fine")
        self.assertEqual(r.returncode, 0, r)
        _, summary, msgs = self.summary()
        self.assertTrue(summary.endswith("streamed 1 lines, 5 bytes; " + LIMITS), summary)
        self.assertFalse(any("ran out" in m for m, _ in msgs), msgs)
        self.assertEqual(self.termlog_lines(), [summary])

    def test_oom_kill_of_another_process(self):
        r = self.run_in_cgroup('echo "oom_kill 1" > "$1/memory.events"; exit 1')
        self.assertEqual(r.returncode, 1, r)
        _, summary, msgs = self.summary()
        note = ("civis-agent: the kernel's OOM killer ended 1 of the command's processes; " + LIMITS)
        self.assertIn((note, "warn"), msgs)
        self.assertIn(note + "\n", r.stderr.decode())
        self.assertFalse(any(m.startswith("Process ran out") for m, _ in msgs), msgs)

    def test_sigkill_is_not_oom(self):
        r = self.run_in_cgroup("kill -KILL $$")
        self.assertEqual(r.returncode, 137, r)
        _, summary, msgs = self.summary()
        self.assertTrue(summary.endswith("; " + LIMITS), summary)
        self.assertFalse(any("ran out" in m for m, _ in msgs), msgs)

    def test_no_limits_no_change(self):
        empty = os.path.join(self.tmp, "empty")
        os.mkdir(empty)
        r = self.run_agent(["--cgroup-root", empty, "--termination-log", "", "--", "sh", "-c",
                            "echo hi; exit 3"])
        self.assertEqual(r.returncode, 3, r)
        _, summary, _ = self.summary()
        self.assertRegex(summary, SUMMARY + "$")
        self.assertEqual(self.termlog_lines(), ["stale"], "--termination-log '' writes nothing")

    def test_termination_log_not_created(self):
        missing = os.path.join(self.tmp, "no-such-termination-log")
        r = self.run_agent(["--cgroup-root", self.cg, "--termination-log", missing, "--",
                            "true"])
        self.assertEqual(r.returncode, 0, r)
        self.assertFalse(os.path.exists(missing))


def memory_cgroup(limit):
    """A child cgroup of ours with a memory limit, for a real OOM: (its
    directory, the file to write a pid to). SkipTest with the reason when
    the host does not allow it."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise unittest.SkipTest("no /proc/self/cgroup: %s" % e)
    v1 = [ln.split(":", 2)[2] for ln in lines if "memory" in ln.split(":", 2)[1].split(",")]
    if v1 and os.path.isdir("/sys/fs/cgroup/memory"):
        base = "/sys/fs/cgroup/memory" + v1[0]
        files = [("memory.limit_in_bytes", limit), ("memory.memsw.limit_in_bytes", limit)]
    else:
        v2 = [ln[3:] for ln in lines if ln.startswith("0::")]
        if not v2 or not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            raise unittest.SkipTest("no memory cgroup (v1 or v2) here")
        base = "/sys/fs/cgroup" + v2[0]
        files = [("memory.max", limit), ("memory.swap.max", 0)]
    d = os.path.join(base, "civis-agent-oom-%d" % os.getpid())
    try:
        os.mkdir(d)
    except OSError as e:
        raise unittest.SkipTest("cannot create a cgroup under %s: %s" % (base, e))
    try:
        for name, value in files:
            path = os.path.join(d, name)
            if name.startswith(("memory.memsw", "memory.swap")) and not os.path.exists(path):
                continue
            with open(path, "w") as f:
                f.write(str(value))
    except OSError as e:
        os.rmdir(d)
        raise unittest.SkipTest("cannot set a memory limit in %s (v2: the memory controller "
                                "is not enabled for our children?): %s" % (d, e))
    return d


class RealOomTest(ProcessBase):
    """The kernel's OOM killer ends the command in a 64 MiB cgroup (a child
    of the test's own, when the host allows one)."""

    def test_real_oom_kill(self):
        if os.environ.get("CIVIS_TEST_QUICK"):
            # integration-valgrind: valgrind's own memory shares the 64 MiB
            # cgroup and the OOM killer picks it (-9); make integration runs this
            self.skipTest("the agent under valgrind does not fit a 64 MiB cgroup")
        d = memory_cgroup(64 << 20)
        try:
            termlog = os.path.join(self.tmp, "termination-log")
            open(termlog, "w").close()
            hog = ('import sys; print("allocating", flush=True); '
                   'b = bytearray(b"x") * (512 << 20); print("survived")')
            argv = ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && exec "$2" --termination-log "$3" '
                    '-- "$4" -c "$5"', "sh", d, util.harness.agent_path(), termlog,
                    sys.executable, hog]
            r = util.harness.SimHarness.run_command(argv, env=self.sim.env(), timeout=120)
        finally:
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except OSError:
                    time.sleep(0.05)
        self.assertEqual(r.returncode, 137, r)
        self.assertEqual(r.stdout, b"allocating\n")
        msgs = self.messages()
        self.assertIn((OOM_LINE, "error"), msgs)
        summary = [m for m, _ in msgs if m.startswith("civis-agent: command ")]
        self.assertEqual(len(summary), 1, msgs)
        self.assertRegex(summary[0], r"^civis-agent: command was killed by signal 9 \(SIGKILL\);.*"
                                     r"; memory limit 64 MiB(?: \(peak [0-9.]+ MiB\))?\. "
                         + OOM_LINE.replace(".", r"\.") + "$")
        self.assertIn("civis-agent: " + OOM_LINE + "\n", r.stderr.decode())
        with open(termlog) as f:
            self.assertEqual(f.read().splitlines()[-1], summary[0])


if __name__ == "__main__":
    unittest.main()
