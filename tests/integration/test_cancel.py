#!/usr/bin/env python3
"""test_cancel.py: cancellation, graceful shutdown and a rejected key,
build/civis-agent against the simulator (tests/sim/harness.py).

- The run is cancelled (isCancelRequested, or state "cancelled") during the
  run: the agent says so in the run log, SIGTERMs the command's group,
  SIGKILLs it after --grace-period; exit status 143 / 137; every line the
  command printed before it ended is in the run log, in order.
- SIGTERM / SIGINT to the agent itself (docker stop): forwarded, the log is
  flushed; with the API slow, stderr says what could not be delivered.
- --exit-code-remap 143: exit 0 after a TERM-ended command.
- A command stopped by SIGTSTP: the SIGTERM of a cancel or a docker stop
  comes with a SIGCONT, so its handler runs at once (exit 7, not 137).
- A rejected key (401): one "API key rejected" message, no API call after
  the 401 but those already in flight; the command's output and status
  untouched.
- The basic cancel case again through Prism: no contract violation.

    python3 tests/integration/test_cancel.py [-v] [TestCancel.test_cancel_requested]

Timing checks are bounded by generous deadlines (loaded 2-core CI)."""

import calendar
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
from harness import SimHarness, prism_missing  # noqa: E402

GRACE = 2.0                 # --grace-period
POLL = 0.5                  # --cancel-poll-interval
SLACK = 3.0                 # scheduling margin on a loaded machine

# A command that ignores SIGTERM (its children too) and prints its own wall
# clock every 10 ms, so the last line says when it ended.
STUBBORN = ('trap "" TERM; i=0; while :; do echo "tick $i $(date +%s%N)"; i=$((i+1)); '
            'sleep 0.01; done')


def parse_ts(s):
    """RFC 3339 with up to ns (createdAt) -> ns since the epoch."""
    s = s.rstrip("Zz")
    if "." in s:
        main, frac = s.split(".", 1)
    else:
        main, frac = s, ""
    secs = calendar.timegm(time.strptime(main.replace(" ", "T"), "%Y-%m-%dT%H:%M:%S"))
    frac = (frac + "000000000")[:9]
    return secs * 1000000000 + int(frac)


def flood_cmd(rate=100):
    """flood paced at `rate` lines/s for far longer than any test: ends only by a signal."""
    return [util.flood_path(), "-n", "100000000", "-s", "60", "-r", str(rate)]


class CancelBase(unittest.TestCase):
    use_prism = False

    @classmethod
    def setUpClass(cls):
        why = util.missing()
        if why:
            raise unittest.SkipTest(why)
        # make check installs Prism (make deps): missing, this is a failure, not a skip
        why = prism_missing() if cls.use_prism else None
        if why:
            raise AssertionError(why)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="civis-cancel-")
        self.h = SimHarness(use_prism=self.use_prism)
        self.h.start()
        self.agents = []

    def tearDown(self):
        for a in self.agents:
            a.close()
        self.h.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, cmd, args=(), extra_env=None):
        a = util.RunningAgent(self.h, ["--grace-period", "%gs" % GRACE,
                                       "--cancel-poll-interval", "%gms" % (POLL * 1000),
                                       "--heartbeat-interval", "1s", "-v"] + list(args)
                              + ["--"] + cmd, self.tmp, extra_env=extra_env)
        self.agents.append(a)
        return a

    def wait_lines(self, n, timeout=20):
        """Until the command has printed n lines (seen in the run log)."""
        self.h.wait_logs(n, timeout=timeout)

    def assert_log_complete(self, a):
        """Every line the command printed (the tee'd stdout) is in the run log,
        once, in createdAt order."""
        printed = a.stdout().decode("utf-8", "replace").splitlines()
        self.assertGreater(len(printed), 5, "the command printed almost nothing")
        logs = sorted(self.h.logs(), key=lambda r: r["createdAt"])
        msgs = [r["message"] for r in logs]
        cmd_lines = [m for m in msgs if not m.startswith("civis-agent: ")]
        self.assertEqual(cmd_lines, printed,
                         "run log differs from what the command printed: %d vs %d lines"
                         % (len(cmd_lines), len(printed)))
        return msgs, logs

    def assert_no_contract_violations(self):
        self.h.assert_no_violations()
        self.h.assert_no_prism_violations()


class TestCancel(CancelBase):

    def cancel_case(self, fields, why, stubborn):
        if stubborn:
            a = self.start(["sh", "-c", STUBBORN])
        else:
            a = self.start(flood_cmd())
        self.wait_lines(20)
        t_cancel = time.monotonic()
        self.h.set_run(**fields)
        rc = a.wait(POLL * 2 + GRACE + 30 + SLACK)
        err = a.stderr()
        ctx = "stderr:\n" + err[-3000:]
        self.assertEqual(rc, 137 if stubborn else 143, ctx)
        msgs, logs = self.assert_log_complete(a)
        note = [r for r in logs if r["message"].startswith("civis-agent: the run was cancelled (%s)"
                                                          % why)]
        self.assertEqual(len(note), 1, "no cancel line in the run log: %s" % msgs[-5:])
        self.assertIn("sending SIGTERM to the command, SIGKILL after 2.0 s", note[0]["message"])
        self.assertIn("the run was cancelled (%s)" % why, err)
        # the command ended within the poll interval + grace period (+ slack)
        self.assertLess(a.wall - (t_cancel - a.t0), POLL * 2 + GRACE + SLACK + 2, ctx)
        if stubborn:
            # it outlived SIGTERM, and was killed within grace + 1 s of the cancel
            last = a.stdout().decode().splitlines()[-1].split()
            ended_ns = int(last[2])
            noticed_ns = parse_ts(note[0]["createdAt"])
            self.assertGreater(ended_ns - noticed_ns, (GRACE - 0.5) * 1e9,
                               "killed before the grace period was over")
            self.assertLess(ended_ns - noticed_ns, (GRACE + 1.0) * 1e9,
                            "not killed within the grace period + 1 s")
            self.assertIn("outlived the grace period (2.0 s): sending SIGKILL", err)
        self.assert_no_contract_violations()
        return a

    def test_cancel_requested(self):
        self.cancel_case({"isCancelRequested": True}, "cancel requested", stubborn=False)

    def test_cancel_requested_stubborn(self):
        self.cancel_case({"isCancelRequested": True}, "cancel requested", stubborn=True)

    def test_state_cancelled(self):
        self.cancel_case({"state": "cancelled"}, "the run's state is cancelled", stubborn=False)

    def test_state_cancelled_stubborn(self):
        self.cancel_case({"state": "cancelled"}, "the run's state is cancelled", stubborn=True)

    def test_cancel_silent_stubborn(self):
        # Ignores SIGTERM and prints nothing: no pipe activity wakes the
        # agent, its timers alone must bring the SIGKILL in time.
        a = self.start(["sh", "-c", 'trap "" TERM; echo started; exec sleep 1000'])
        self.wait_lines(1)
        self.h.set_run(isCancelRequested=True)
        rc = a.wait(POLL * 2 + GRACE + 30 + SLACK)
        ended_ns = time.time_ns()      # the agent exits right after the command
        ctx = "stderr:\n" + a.stderr()[-3000:]
        self.assertEqual(rc, 137, ctx)
        note = [r for r in self.h.logs() if r["message"].startswith("civis-agent: the run was "
                                                                      "cancelled")]
        self.assertEqual(len(note), 1, ctx)
        took = (ended_ns - parse_ts(note[0]["createdAt"])) / 1e9
        self.assertGreater(took, GRACE - 0.5, ctx)
        self.assertLess(took, GRACE + 1.0, "SIGKILL %.3f s after the cancel was seen, grace "
                        "%.1f s: %s" % (took, GRACE, ctx))

    def stopped_case(self, act):
        """A command stopped by SIGTSTP: its TERM handler runs only once it
        is continued, so the SIGTERM of a cancel or a docker stop comes with
        a SIGCONT; it exits 7 at once instead of dying of SIGKILL (137)."""
        a = self.start(["sh", "-c", 'trap "echo got TERM; exit 7" TERM; echo started; '
                        'kill -TSTP $$; echo resumed'])
        self.wait_lines(1)
        cmd = None

        def stopped():
            nonlocal cmd
            with open("/proc/%d/task/%d/children" % (a.pid, a.pid)) as f:
                kids = f.read().split()
            if not kids:
                return False
            cmd = int(kids[0])
            with open("/proc/%d/stat" % cmd) as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"
        util.wait_until(stopped, 10, what="the command to stop")
        t = time.monotonic()
        act(a)
        rc = a.wait(POLL * 2 + GRACE + 30 + SLACK)
        ctx = "stderr:\n" + a.stderr()[-3000:]
        self.assertEqual(rc, 7, ctx)
        self.assertLess(a.end - t, GRACE, ctx)
        msgs = [r["message"] for r in sorted(self.h.logs(), key=lambda r: r["createdAt"])]
        self.assertIn("got TERM", msgs)
        self.assertNotIn("resumed", msgs)

    def test_cancel_stopped_command(self):
        self.stopped_case(lambda a: self.h.set_run(isCancelRequested=True))

    def test_sigterm_stopped_command(self):
        self.stopped_case(lambda a: a.signal(signal.SIGTERM))

    def test_sigterm_stubborn(self):
        # docker stop on a command that ignores SIGTERM: SIGKILL after the grace period
        a = self.start(["sh", "-c", STUBBORN])
        self.wait_lines(20)
        t = time.monotonic()
        a.signal(signal.SIGTERM)
        rc = a.wait(GRACE + 30 + SLACK)
        ctx = "stderr:\n" + a.stderr()[-3000:]
        self.assertEqual(rc, 137, ctx)
        self.assertGreater(a.end - t, GRACE - 0.5, ctx)
        self.assertLess(a.end - t, GRACE + 1.0 + SLACK, ctx)
        self.assert_log_complete(a)

    def signal_case(self, sig):
        a = self.start(flood_cmd())
        self.wait_lines(20)
        a.signal(sig)
        rc = a.wait(GRACE + 30 + SLACK)
        ctx = "stderr:\n" + a.stderr()[-3000:]
        self.assertEqual(rc, 128 + sig, ctx)       # forwarded: the command died of it
        self.assertNotIn("could not be delivered", a.stderr(), ctx)
        self.assert_log_complete(a)
        v = util.parse_verbose(a.stderr())
        self.assertEqual(v.get("undelivered"), 0, ctx)
        self.assert_no_contract_violations()

    def test_sigterm_forwarded_and_flushed(self):
        self.signal_case(signal.SIGTERM)

    def test_sigint_forwarded_and_flushed(self):
        self.signal_case(signal.SIGINT)

    def test_sigterm_with_slow_api(self):
        a = self.start(flood_cmd())
        self.wait_lines(20)
        # from now every log request takes 30 s: nothing more gets through
        self.h.set_faults([{"action": "delay", "seconds": 30, "path": util.log_path(self.h)}])
        time.sleep(1.5)         # lines printed meanwhile wait in the agent
        t = time.monotonic()
        a.signal(signal.SIGTERM)
        rc = a.wait(GRACE + 30 + SLACK)
        err = a.stderr()
        ctx = "stderr:\n" + err[-3000:]
        self.assertEqual(rc, 143, ctx)
        # docker stop gives the grace period: the agent is done by then
        self.assertLess(a.end - t, GRACE + SLACK, ctx)
        v = util.parse_verbose(err)
        self.assertGreater(v.get("undelivered", 0), 0, ctx)
        self.assertEqual(v.get("undelivered_msg"), v["undelivered"], ctx)
        self.assertIn("civis-agent: %d log lines could not be delivered to the run log in time"
                      % v["undelivered"], err)

    def test_exit_code_remap_143(self):
        a = self.start(flood_cmd(), args=["--exit-code-remap", "143"])
        self.wait_lines(20)
        a.signal(signal.SIGTERM)
        rc = a.wait(GRACE + 30 + SLACK)
        self.assertEqual(rc, 0, a.stderr()[-3000:])
        self.assertIn("killed by signal 15 (SIGTERM)", a.stderr())
        self.assert_log_complete(a)

    def test_exit_code_remap_after_cancel(self):
        a = self.start(flood_cmd(), args=["--exit-code-remap", "143"])
        self.wait_lines(20)
        self.h.set_run(isCancelRequested=True)
        rc = a.wait(POLL * 2 + GRACE + 30 + SLACK)
        self.assertEqual(rc, 0, a.stderr()[-3000:])
        self.assert_log_complete(a)

    def test_rejected_key(self):
        script = ('echo out1; echo err1 >&2; i=0; while [ $i -lt 30 ]; do echo "line $i"; '
                  'i=$((i+1)); sleep 0.1; done; echo err2 >&2; exit 7')
        a = self.start(["sh", "-c", script], extra_env={"CIVIS_API_KEY": "wrong-key-0000"})
        rc = a.wait(60)
        err = a.stderr()
        self.assertEqual(rc, 7, err)
        out = a.stdout().decode()
        self.assertEqual(out, "out1\n" + "".join("line %d\n" % i for i in range(30)))
        self.assertIn("err1\n", err)
        self.assertIn("err2\n", err)
        self.assertEqual(err.count("API key rejected"), 1, err)
        # what was not delivered is put down to the key, not to a timeout
        self.assertNotIn("could not be delivered to the run log in time", err)
        self.assertRegex(err, r"civis-agent: \d+ log lines were not delivered: the API key "
                              r"was rejected\n")
        reqs = self.h.requests("api")
        self.assertTrue(reqs, "no API call at all")
        first401 = min((q for q in reqs if q["status"] == 401), key=lambda q: q["seq"], default=None)
        self.assertIsNotNone(first401, "no 401: %s" % reqs)
        # Calls the agent started before it had read the 401 (in flight, or
        # sent in the few ms until then) are fine; none may come later. With
        # 1 s heartbeats, 0.5 s polls and 0.5 s log ticks, a 1 s window
        # would see several new calls from an agent that went on.
        answered = first401["mono"] + (first401["duration"] or 0)
        after = [q for q in reqs if q["mono"] > answered + 1.0]
        self.assertEqual(after, [], "API calls after the 401 was answered: %s"
                         % [(q["seq"], q["method"], q["path"]) for q in after])
        self.assertEqual(self.h.logs(), [])
        # the agent ran 3 s with 1 s heartbeats and 0.5 s polls: without the
        # latch there would be a dozen calls; all of them are in flight at once
        self.assertLessEqual(len(reqs), 4, [(q["seq"], q["path"], q["status"]) for q in reqs])


class TestCancelPrism(CancelBase):
    use_prism = True

    def test_cancel_requested_through_prism(self):
        mark = self.h.prism_mark()
        a = self.start(flood_cmd())
        self.wait_lines(20, timeout=60)
        self.h.set_run(isCancelRequested=True)
        rc = a.wait(POLL * 2 + GRACE + 30 + SLACK + 10)
        self.assertEqual(rc, 143, a.stderr()[-3000:])
        self.assert_log_complete(a)
        self.assertIn("the run was cancelled (cancel requested)", a.stderr())
        self.h.assert_no_violations()
        self.h.assert_no_prism_violations(mark)

    def test_stubborn_state_cancelled_through_prism(self):
        mark = self.h.prism_mark()
        a = self.start(["sh", "-c", STUBBORN])
        self.wait_lines(20, timeout=60)
        self.h.set_run(state="cancelled")
        rc = a.wait(POLL * 2 + GRACE + 30 + SLACK + 10)
        self.assertEqual(rc, 137, a.stderr()[-3000:])
        self.assert_log_complete(a)
        self.h.assert_no_prism_violations(mark)

    def test_sigterm_through_prism(self):
        mark = self.h.prism_mark()
        a = self.start(flood_cmd())
        self.wait_lines(20, timeout=60)
        a.signal(signal.SIGTERM)
        rc = a.wait(GRACE + 30 + SLACK + 10)
        self.assertEqual(rc, 143, a.stderr()[-3000:])
        self.assert_log_complete(a)
        self.h.assert_no_prism_violations(mark)

    def test_rejected_key_through_prism(self):
        mark = self.h.prism_mark()
        a = self.start(["sh", "-c", "echo a; sleep 2; echo b; exit 3"],
                       extra_env={"CIVIS_API_KEY": "wrong-key-0000"})
        rc = a.wait(60)
        self.assertEqual(rc, 3)
        self.assertEqual(a.stdout(), b"a\nb\n")
        self.assertEqual(a.stderr().count("API key rejected"), 1, a.stderr())
        self.h.assert_no_prism_violations(mark)


if __name__ == "__main__":
    unittest.main()
