#!/usr/bin/env python3
"""test_platform.py: the agent and the platform around it (issue 13).

- --report-state (point 5): PATCH .../runs/{run_id} with bocceAcceptedAt
  when the agent starts, bocceStartedAt when the command starts, and state
  succeeded or failed at exit; off by default; an API without the PATCH
  (the simulator's --run-patch-missing) is said once and not asked again.
- A deployment without heartbeats (point 4, the simulator's
  --heartbeats-missing): one note on stderr and one in the run log.

Short runs, each against its own simulator; the PATCH bodies are what the
simulator recorded (/_sim/patches), checked against the contract by Prism
in TestReportStatePrism."""

import datetime
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import util  # noqa: E402
from harness import SimHarness  # noqa: E402

CMD_OK = ["--", "sh", "-c", "echo working; sleep 0.3"]
CMD_FAIL = ["--", "sh", "-c", "echo failing; exit 3"]


def ts(s):
    """RFC 3339 with up to 9 fractional digits -> aware datetime (microseconds)."""
    s = s.rstrip("Z")
    if "." in s:
        base, frac = s.split(".")
        s = base + "." + frac[:6]
    return datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc)


class ReportState(unittest.TestCase):
    use_prism = False

    def run_one(self, args, sim_args=()):
        with SimHarness(use_prism=self.use_prism, sim_args=list(sim_args)) as h:
            before = datetime.datetime.now(datetime.timezone.utc)
            res = h.run_agent(args, timeout=60)
            after = datetime.datetime.now(datetime.timezone.utc)
            h.wait_logs(1, timeout=20)
            out = {
                "res": res,
                "err": res.stderr.decode("utf-8", "replace"),
                "patches": h.patches(),
                "msgs": h.log_messages(),
                "before": before,
                "after": after,
            }
            h.assert_no_violations()
            if self.use_prism:
                h.assert_no_prism_violations()
            return out

    def bodies(self, r):
        return [p["body"] for p in r["patches"]]

    def test_off_by_default(self):
        r = self.run_one(CMD_OK)
        self.assertEqual(r["res"].returncode, 0, r["err"])
        self.assertEqual(r["patches"], [])

    def test_succeeded(self):
        r = self.run_one(["--report-state"] + CMD_OK)
        self.assertEqual(r["res"].returncode, 0, r["err"])
        bodies = self.bodies(r)
        self.assertEqual(len(bodies), 3, bodies)
        acc = [b for b in bodies if "bocceAcceptedAt" in b]
        sta = [b for b in bodies if "bocceStartedAt" in b]
        self.assertEqual(len(acc), 1, bodies)
        self.assertEqual(len(sta), 1, bodies)
        self.assertEqual(bodies[-1], {"state": "succeeded"})   # last, after the other two
        t_acc, t_sta = ts(acc[0]["bocceAcceptedAt"]), ts(sta[0]["bocceStartedAt"])
        slack = datetime.timedelta(seconds=1)
        self.assertTrue(r["before"] - slack <= t_acc <= t_sta <= r["after"] + slack,
                        (r["before"], t_acc, t_sta, r["after"]))
        self.assertTrue(all(p["status"] == 204 for p in r["patches"]), r["patches"])
        self.assertNotIn("run state", r["err"])

    def test_failed(self):
        r = self.run_one(["--report-state"] + CMD_FAIL)
        self.assertEqual(r["res"].returncode, 3, r["err"])
        bodies = self.bodies(r)
        self.assertEqual(bodies[-1], {"state": "failed"}, bodies)
        self.assertEqual(len(bodies), 3, bodies)

    def test_env_twin(self):
        with SimHarness(use_prism=self.use_prism) as h:
            res = h.run_agent(CMD_OK, extra_env={"CIVIS_AGENT_REPORT_STATE": "1"}, timeout=60)
            self.assertEqual(res.returncode, 0)
            self.assertEqual(h.patches()[-1]["body"], {"state": "succeeded"})


class ReportStatePrism(ReportState):
    """The same, every request held to the contract by Prism."""
    use_prism = True


class MissingEndpoints(unittest.TestCase):
    """The simulator's modes without an endpoint: said once, asked no more."""

    def test_run_patch_missing(self):
        for status in (404, 405, 410):
            with self.subTest(status=status):
                with SimHarness(sim_args=["--run-patch-missing", str(status)]) as h:
                    res = h.run_agent(["--report-state"] + CMD_OK, timeout=60)
                    err = res.stderr.decode("utf-8", "replace")
                    self.assertEqual(res.returncode, 0, err)
                    h.wait_logs(2, timeout=20)
                    note = ("the API has no endpoint for run state reports here (HTTP %d): "
                            "no more run state reports for this run" % status)
                    self.assertEqual(err.count(note), 1, err)
                    self.assertEqual(err.count("civis-agent:"), 1, err)
                    msgs = h.log_messages()
                    self.assertEqual([m for m in msgs if "run state" in m],
                                     ["civis-agent: " + note])
                    patches = h.patches()
                    # accepted and started go out together; the end is not asked
                    self.assertLessEqual(len(patches), 2, patches)
                    self.assertFalse(any("state" in (p["body"] or {}) for p in patches))
                    self.assertTrue(all(p["status"] == status for p in patches))

    def test_heartbeats_missing(self):
        with SimHarness(sim_args=["--heartbeats-missing", "404"]) as h:
            res = h.run_agent(["--heartbeat-interval", "200ms", "--", "sh", "-c",
                               "echo a; sleep 2; echo b"], timeout=60)
            err = res.stderr.decode("utf-8", "replace")
            self.assertEqual(res.returncode, 0, err)
            h.wait_logs(3, timeout=20)
            note = ("the API has no endpoint for heartbeats here (HTTP 404): "
                    "no more heartbeats for this run")
            self.assertEqual(err.count(note), 1, err)
            self.assertEqual(err.count("civis-agent:"), 1, err)
            self.assertEqual([m for m in h.log_messages() if "heartbeat" in m],
                             ["civis-agent: " + note])
            self.assertEqual(h.state()["heartbeatsRefused"], 1)
            hbs = [q for q in h.requests("api") if q["path"] == util.hb_path(h)]
            self.assertEqual(len(hbs), 1, hbs)


if __name__ == "__main__":
    unittest.main()
