"""The run log and heartbeats: the real agent against the simulator.

Each test states what the API must have received. Run with
tests/integration/run.py (make integration)."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))
import harness  # noqa: E402
from harness import SimHarness  # noqa: E402

QUICK = os.environ.get("CIVIS_TEST_QUICK") == "1"
FLOOD = os.path.join(ROOT, "build", "tools", "flood")


def created_order_ok(logs):
    """createdAt strictly increasing in arrival-independent order."""
    stamps = [l["createdAt"] for l in logs]
    return all(a < b for a, b in zip(stamps, stamps[1:])), stamps


def sort_by_created(logs):
    return sorted(logs, key=lambda l: l["createdAt"])


class LogsTest(unittest.TestCase):
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

    def run_agent(self, args, **kw):
        kw.setdefault("timeout", 60)
        return self.sim.run_agent(args, **kw)

    def messages(self):
        return [l["message"] for l in sort_by_created(self.sim.logs())]

    def command_messages(self):
        return [m for m in self.messages() if not m.startswith("civis-agent: ")]

    # ------------------------------------------------------------ basics

    def test_lines_levels_order_and_tee(self):
        script = "echo one; echo two >&2; echo three; echo four >&2; exit 5"
        r = self.run_agent(["--", "sh", "-c", script])
        self.assertEqual(r.returncode, 5)
        self.assertEqual(r.stdout, b"one\nthree\n")
        self.assertIn(b"two\nfour\n", r.stderr)
        logs = sort_by_created(self.sim.logs())
        got = [(l["message"], l["level"]) for l in logs if not l["message"].startswith("civis-agent: ")]
        # Within a stream, createdAt keeps the order; across the two pipes it
        # is the order the agent read them (test_interleaved_order paces it).
        self.assertEqual([g for g in got if g[1] == "info"], [("one", "info"), ("three", "info")])
        self.assertEqual([g for g in got if g[1] == "error"], [("two", "error"), ("four", "error")])
        ok, stamps = created_order_ok(self.sim.logs())
        self.assertEqual(len(set(stamps)), len(stamps), "createdAt must be unique")
        for s in stamps:   # RFC 3339 UTC with nanoseconds
            self.assertRegex(s, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
        self.sim.assert_no_violations()

    def test_stderr_level_option_and_env(self):
        r = self.run_agent(["--stderr-level", "warn", "--stdout-level", "debug", "--",
                            "sh", "-c", "echo a; echo b >&2"])
        self.assertEqual(r.returncode, 0)
        got = {l["message"]: l["level"] for l in self.sim.logs()}
        self.assertEqual(got["a"], "debug")
        self.assertEqual(got["b"], "warn")
        self.sim.reset()
        r = self.run_agent(["--", "sh", "-c", "echo b >&2"],
                           extra_env={"CIVIS_AGENT_STDERR_LEVEL": "info"})
        self.assertEqual({l["message"]: l["level"] for l in self.sim.logs()}["b"], "info")

    def test_levels_detected_from_the_line(self):
        # Python's logging on stderr: its INFO lines are info, not error; a
        # line with no level word keeps its stream's level; the agent's own
        # notes keep theirs. --no-detect-levels (or its variable) turns it off.
        code = ("import logging, sys\n"
                "logging.basicConfig(level=logging.DEBUG)\n"
                "log = logging.getLogger('job')\n"
                "log.debug('d'); log.info('i'); log.warning('w'); log.error('e'); log.critical('c')\n"
                "print('Traceback-free line', file=sys.stderr)\n"
                "print('[WARN] from stdout', flush=True)\n"
                "print('{\"severity\": \"ERROR\", \"message\": \"json\"}', flush=True)\n")
        want = [("DEBUG:job:d", "debug"), ("INFO:job:i", "info"), ("WARNING:job:w", "warn"),
                ("ERROR:job:e", "error"), ("CRITICAL:job:c", "fatal"),
                ("Traceback-free line", "error"), ("[WARN] from stdout", "warn"),
                ('{"severity": "ERROR", "message": "json"}', "error")]
        r = self.run_agent(["--", sys.executable, "-c", code])
        self.assertEqual(r.returncode, 0, r)
        got = {l["message"]: l["level"] for l in self.sim.logs()}
        self.assertEqual([(m, got.get(m)) for m, _ in want], want)
        self.assertEqual(got[self.messages()[-1]], "info", "the summary note keeps its level")
        for args, extra in ((["--no-detect-levels"], None),
                            ([], {"CIVIS_AGENT_NO_DETECT_LEVELS": "1"})):
            self.sim.reset()
            r = self.run_agent(args + ["--", sys.executable, "-c", code], extra_env=extra)
            self.assertEqual(r.returncode, 0, r)
            got = {l["message"]: l["level"] for l in self.sim.logs()}
            self.assertEqual([(m, got.get(m)) for m, _ in want],
                             [(m, "error") for m, _ in want[:6]] +
                             [(m, "info") for m, _ in want[6:]])

    def test_line_boundaries(self):
        # CRLF, empty lines, a lone CR mid-line, no final newline
        data = b"crlf\r\n\nmid\rcr\n\r\nlast-no-newline"
        r = self.run_agent(["--", "sh", "-c", "cat"], stdin=data)
        self.assertEqual(r.stdout, data, "the tee copy stays byte exact")
        self.assertEqual(self.command_messages(), ["crlf", "", "mid\rcr", "", "last-no-newline"])

    def test_long_line_split_at_cap(self):
        line = "x" * 2500
        r = self.run_agent(["--log-line-max", "1K", "--", "sh", "-c", "printf '%s\\n' " + line])
        self.assertEqual(r.returncode, 0)
        self.assertEqual(self.command_messages(), ["x" * 1024, "x" * 1024, "x" * 452])

    def test_invalid_utf8_and_nul(self):
        data = b"ok \xc3\xa9\n\xff\xfe bad\nnul\x00byte\n\xe2\x82 cut\n\xed\xa0\x80 surrogate\n"
        r = self.run_agent(["--", "cat"], stdin=data)
        self.assertEqual(r.stdout, data)
        self.assertEqual(self.command_messages(),
                         ["ok \u00e9", "\ufffd\ufffd bad", "nul\x00byte", "\ufffd cut",
                          "\ufffd\ufffd\ufffd surrogate"])

    def test_partial_line_sent_after_flush_interval(self):
        # The command prints a partial line and keeps running: it must reach
        # the API within about a flush interval, long before the command ends.
        r = None
        p = subprocess.Popen([harness.agent_path(), "--log-flush-interval", "300ms", "--",
                              "sh", "-c", "printf 'waiting...'; sleep 4; echo ' done'"],
                             env=self.sim.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            t0 = time.monotonic()
            got = None
            while time.monotonic() - t0 < 3.0:
                msgs = self.command_messages()
                if msgs:
                    got = msgs
                    break
                time.sleep(0.05)
            self.assertEqual(got, ["waiting..."], "partial line not delivered while the command ran")
            self.assertLess(time.monotonic() - t0, 2.5)
        finally:
            out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0)
        self.assertEqual(self.command_messages(), ["waiting...", " done"])

    def test_summary_line(self):
        # An empty --cgroup-root: no limits to add, whatever container this
        # runs in (test_process.py checks the "; memory limit ..." suffix).
        nocg = tempfile.mkdtemp(prefix="civis-nocg-")
        self.addCleanup(os.rmdir, nocg)
        r = self.run_agent(["--cgroup-root", nocg, "--", "sh", "-c", "echo hi; exit 3"])
        self.assertEqual(r.returncode, 3)
        last = self.messages()[-1]
        self.assertRegex(last, r"^civis-agent: command exited with status 3; wall time [0-9.]+ s, "
                               r"CPU [0-9.]+ s \(user [0-9.]+ s, system [0-9.]+ s\), peak RSS "
                               r"[0-9.]+ MiB; streamed 1 lines, 3 bytes$")
        r = self.run_agent(["--cgroup-root", nocg, "--", "sh", "-c", "kill -TERM $$"])
        self.assertEqual(r.returncode, 143)
        self.assertRegex(self.messages()[-1], r"command was killed by signal 15 \(SIGTERM\)")

    def test_verbose_backlog_line_only_when_used(self):
        # -v reports the raw-output backlog only when a flood used it
        # (test_security.py checks the line itself): a short run has none.
        r = self.run_agent(["-v", "--", "sh", "-c", "echo hi"])
        self.assertEqual(r.returncode, 0, r.stderr)
        err = r.stderr.decode("utf-8", "replace")
        self.assertIn("civis-agent: delivery: ", err)
        self.assertNotIn("civis-agent: log backlog:", err)

    def test_interleaved_order(self):
        # What the agent promises (agent/logstream.h): each stream's lines in
        # the order written, none lost or doubled, createdAt strictly
        # increasing in the order the agent made them. Across stdout and
        # stderr it can only know the order of its own reads: two writes to
        # different pipes between two of its reads may be read either way
        # round (under valgrind on a loaded machine they often are).
        # 1. A burst, alternating streams at full speed: the order within
        #    each stream, whatever the reads did across them.
        script = ("i=1; while [ $i -le 40 ]; do if [ $((i % 2)) = 0 ]; then echo $i >&2; "
                  "else echo $i; fi; i=$((i+1)); done")
        r = self.run_agent(["--", "sh", "-c", script])
        self.assertEqual(r.returncode, 0)
        logs = [l for l in self.sim.logs() if not l["message"].startswith("civis-agent: ")]
        ok, stamps = created_order_ok(sort_by_created(logs))
        self.assertTrue(ok, "createdAt not unique: %r" % stamps)
        by_created = sort_by_created(logs)
        self.assertEqual([l["message"] for l in by_created if l["level"] == "info"],
                         [str(i) for i in range(1, 41, 2)])
        self.assertEqual([l["message"] for l in by_created if l["level"] == "error"],
                         [str(i) for i in range(2, 41, 2)])
        # 2. Where the agent can know the order across streams: each line is
        #    written only once the one before it is in the run log, so the
        #    agent read it first. createdAt must then give the write order.
        self.sim.reset()
        writer = ("import json, sys, time, urllib.request\n"
                  "url = sys.argv[1] + '/_sim/logs?format=messages'\n"
                  "for i in range(1, 13):\n"
                  "    print(i, file=sys.stdout if i % 2 else sys.stderr, flush=True)\n"
                  "    end = time.monotonic() + 30\n"
                  "    while str(i) not in json.load(urllib.request.urlopen(url)):\n"
                  "        if time.monotonic() > end:\n"
                  "            sys.exit('line %d not in the run log after 30 s' % i)\n"
                  "        time.sleep(0.02)\n")
        r = self.run_agent(["--log-flush-interval", "50ms", "--", sys.executable, "-c", writer,
                            self.sim.sim_url], timeout=120)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.command_messages(), [str(i) for i in range(1, 13)])

    def test_heartbeats_counted(self):
        r = self.run_agent(["--heartbeat-interval", "200ms", "--", "sleep", "3"])
        self.assertEqual(r.returncode, 0)
        hb = self.sim.heartbeats()
        # at start, then every 200 ms +-10%: 14..16 in 3 s; allow for a loaded machine
        self.assertGreaterEqual(len(hb), 11, hb)
        self.assertLessEqual(len(hb), 18, hb)
        gaps = [b["mono"] - a["mono"] for a, b in zip(hb, hb[1:])]
        self.assertLess(max(gaps), 0.6, gaps)
        first_req = self.sim.requests("api")[0]
        self.assertIn("heartbeats", first_req["path"], "the first call is a heartbeat")

    def test_heartbeats_during_flood(self):
        if QUICK:
            self.skipTest("long under valgrind")
        r = self.run_agent(["--heartbeat-interval", "200ms", "--", "sh", "-c",
                            "%s -n 300000 -s 100 & sleep 2; wait" % FLOOD], timeout=120)
        self.assertEqual(r.returncode, 0)
        hb = self.sim.heartbeats()
        self.assertGreaterEqual(len(hb), 7, "heartbeats go on while the log stream is at full load")
        self.assertEqual(len(self.command_messages()), 300000)

    def test_flood_exact_once_in_order(self):
        if QUICK:
            self.skipTest("long under valgrind")
        n = 200000
        r = self.run_agent(["-v", "--", FLOOD, "-n", str(n), "-s", "100", "-e"], timeout=120)
        self.assertEqual(r.returncode, 0)
        msgs = self.command_messages()
        self.assertEqual(len(msgs), n)
        seqs = [int(m.split(" ", 1)[0]) for m in msgs]
        self.assertTrue(sorted(seqs) == list(range(n)), "every line exactly once")
        for parity in (0, 1):   # -e: odd lines on stderr; each stream in order
            part = [q for q in seqs if q % 2 == parity]
            self.assertTrue(part == sorted(part), "createdAt order is the read order")
        reqs = [q for q in self.sim.requests("api") if q["path"].endswith("/logs")]
        self.assertGreaterEqual(n / len(reqs), 1000, "at least 1,000 lines per request")

    # ------------------------------------------------------------ config

    def check_config_error(self, env, message):
        e = {k: v for k, v in os.environ.items() if not k.startswith("CIVIS_")}
        e.update(env)
        r = harness.SimHarness.run_command([harness.agent_path(), "--", "sh", "-c", "echo ran"],
                                           env=e, timeout=30)
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(r.stdout, b"", "nothing runs on a configuration error")
        self.assertEqual(r.stderr.decode(), "civis-agent: " + message + "\n")

    def test_config_errors(self):
        ok = {"CIVIS_API_KEY": "k3y-value", "CIVIS_JOB_ID": "1", "CIVIS_RUN_ID": "2",
              "CIVIS_API_ENDPOINT": "http://127.0.0.1:9/"}
        cases = [
            ({"CIVIS_JOB_ID": "1"},
             "CIVIS_JOB_ID is set but CIVIS_API_KEY and CIVIS_RUN_ID are not; set all three of "
             "CIVIS_API_KEY, CIVIS_JOB_ID, CIVIS_RUN_ID, or none"),
            (dict(ok, CIVIS_JOB_ID="abc"), "CIVIS_JOB_ID is not a positive integer: 'abc'"),
            (dict(ok, CIVIS_RUN_ID="-3"), "CIVIS_RUN_ID is not a positive integer: '-3'"),
            (dict(ok, CIVIS_API_ENDPOINT="http://example.com/"),
             "CIVIS_API_ENDPOINT must use https:// for a non-loopback host: 'http://example.com/'"),
        ]
        for env, msg in cases:
            with self.subTest(env=env):
                self.check_config_error(env, msg)
        # the key's value never appears in a message
        e = dict(ok, CIVIS_JOB_ID="x")
        r = harness.SimHarness.run_command([harness.agent_path(), "true"], env=e, timeout=30)
        self.assertNotIn(b"k3y-value", r.stderr)

    def test_no_api_tee_only(self):
        e = {k: v for k, v in os.environ.items() if not k.startswith("CIVIS_")}
        r = harness.SimHarness.run_command([harness.agent_path(), "sh", "-c", "echo x; exit 4"],
                                           env=e, timeout=30)
        self.assertEqual(r.returncode, 4)
        self.assertEqual(r.stdout, b"x\n")
        self.assertEqual(r.stderr.decode().count("running the command without the Civis API"), 1)

    def test_bad_key_stops_api_calls(self):
        e = self.sim.env()
        e["CIVIS_API_KEY"] = "wrong-key-value"
        r = harness.SimHarness.run_command(
            [harness.agent_path(), "--heartbeat-interval", "100ms", "--", "sh", "-c",
             "echo a; sleep 1; echo b; exit 6"], env=e, timeout=30)
        self.assertEqual(r.returncode, 6, "the command is not disturbed")
        self.assertEqual(r.stdout, b"a\nb\n")
        err = r.stderr.decode()
        self.assertEqual(err.count("API key rejected"), 1, err)
        self.assertNotIn("wrong-key-value", err)
        reqs = self.sim.requests("api")
        first401 = min(i for i, q in enumerate(reqs) if q["status"] == 401)
        # only requests already in flight may follow the first 401
        self.assertLessEqual(len(reqs) - first401, 3, reqs)


class LogsThroughPrismTest(unittest.TestCase):
    """The same calls through Prism: any request off the contract fails."""

    @classmethod
    def setUpClass(cls):
        # make check installs Prism (make deps): missing, this is a failure, not a skip
        why = harness.prism_missing()
        if why:
            raise AssertionError(why)

    def test_run_through_prism(self):
        with SimHarness(use_prism=True) as sim:
            mark = sim.prism_mark()
            r = sim.run_agent(["--heartbeat-interval", "300ms", "--cancel-poll-interval", "300ms",
                               "--", "sh", "-c",
                               "echo out; echo err >&2; printf 'bad \\377 utf8\\n'; sleep 1.2"],
                              timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            msgs = [l["message"] for l in sorted(sim.logs(), key=lambda l: l["createdAt"])]
            self.assertEqual(sorted(msgs[:3]), sorted(["out", "err", "bad \ufffd utf8"]))
            self.assertGreaterEqual(len(sim.heartbeats()), 3)
            paths = {q["path"] for q in sim.requests("api")}
            self.assertIn("/scripts/containers/%d/runs/%d" % (sim.job_id, sim.run_id), paths)
            sim.assert_no_prism_violations(mark)
            sim.assert_no_violations()


if __name__ == "__main__":
    unittest.main()
