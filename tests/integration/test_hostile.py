#!/usr/bin/env python3
"""test_hostile.py: build/civis-agent against a hostile Civis API (the
simulator's `hostile` faults, tests/sim/README.md).

    python3 tests/integration/test_hostile.py [-v] [TestClass.test_name]
    CIVIS_HOSTILE_SLOW=1 ...   also the 2-minute Retry-After clamp test

Each hostile answer must be handled at a bounded cost (time, memory) with a
clear one-line message, and the command's exit status must come back
unchanged (the command here exits 7). What is asserted:

  - a 10 GiB Content-Length, an endless body: refused at the answer cap
    (64 KiB for API answers, 1 MiB for the log POST), with the message;
  - JSON nested 100,000 deep (over the cap) and 20,000 deep (under it: the
    parser's nesting limit) on the cancel poll and on POST /files/;
  - a Retry-After of ~31 years: the run still ends within
    --final-flush-timeout, saying how many lines were not delivered;
  - a redirect to another host:port (302 and 307): never followed, and a
    second listener sees no request at all (so never the key);
  - an uploadUrl on the API host: the upload goes there without the API key
    (the simulator's record has no Authorization), for the form POST, the
    multipart PUTs and `civis-agent upload`.
"""

import http.server
import os
import re
import shutil
import socketserver
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "sim"))

from harness import SimHarness, agent_path  # noqa: E402

JOB, RUN = 11, 22
RUN_PATH = "/scripts/containers/%d/runs/%d" % (JOB, RUN)
API_CAP = 65536            # lib/src/http.c: default answer cap
LOG_CAP = 1048576          # the log POST's answer cap
SCRIPT = "echo a; sleep 1; echo b >&2; exit 7"
# Under valgrind (tests/integration/valgrind-agent.sh sets CIVIS_REAL_AGENT)
# everything is slower, and the peak RSS is valgrind's.
VALGRIND = bool(os.environ.get("CIVIS_REAL_AGENT"))
# The cost bound of one hostile answer: the run takes the command's 1 s
# plus at most this much.
SLACK = 25.0 if VALGRIND else 8.0


class Listener:
    """A second HTTP server on another port that records every request: a
    redirect target that must never be reached."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                outer.requests.append((self.command, self.path, dict(self.headers)))
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(min(n, 1 << 20))
                self.send_response(204)
                self.end_headers()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *a):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def lines(b):
    return b.decode("utf-8", "replace").splitlines()


@unittest.skipUnless(os.access(agent_path(), os.X_OK), "build/civis-agent not built")
class HostileBase(unittest.TestCase):
    h = None

    @classmethod
    def setUpClass(cls):
        cls.h = SimHarness(job_id=JOB, run_id=RUN)
        cls.h.start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()

    def setUp(self):
        self.h.reset()
        self.tmp = tempfile.mkdtemp(prefix="civis-hostile-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------ helpers

    def agent(self, args, script=SCRIPT, verbose=False, flush="5s", timeout=90, env=None):
        argv = (["-v"] if verbose else []) + ["--final-flush-timeout", flush] + list(args)
        r = self.h.run_agent(argv + ["--", "sh", "-c", script], timeout=timeout,
                             extra_env=dict(env or {}, TMPDIR=self.tmp))
        self.assertFalse(r.timed_out, r)
        return r

    def assert_command_intact(self, r, status=7):
        """The command's status and output come through whatever the API did."""
        self.assertEqual(r.returncode, status, r)
        self.assertEqual(r.stdout, b"a\n", r)
        self.assertIn("b", lines(r.stderr), r)

    def assert_line(self, r, line):
        self.assertIn(line, lines(r.stderr), "no line %r in:\n%s" % (
            line, r.stderr.decode("utf-8", "replace")))

    def assert_said(self, r, line):
        """The line on stderr, or (info notes without -v) in the run log only."""
        if line in lines(r.stderr):
            return
        msgs = self.h.log_messages()
        self.assertIn(line, msgs, "no line %r on stderr:\n%s\nnor in the run log: %r" % (
            line, r.stderr.decode("utf-8", "replace"), msgs))

    def assert_bounded(self, r, seconds):
        self.assertLess(r.wall, seconds, "took %.1f s, bound %.1f s: %r" % (r.wall, seconds, r))

    def assert_peak_rss_below(self, r, kib):
        if VALGRIND:
            return
        m = re.search(r"^civis-agent: agent peak RSS \(VmHWM\): (\d+) kB$",
                      r.stderr.decode("utf-8", "replace"), re.M)
        self.assertIsNotNone(m, r)
        self.assertLess(int(m.group(1)), kib, "agent peak RSS %s kB" % m.group(1))

    def applied(self, fault_id="f1"):
        for f in self.h.state()["faults"]:
            if f["id"] == fault_id:
                return f["applied"]
        return 0

    def outdir(self, files):
        d = os.path.join(self.tmp, "out")
        os.makedirs(d, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as fh:
                fh.write(data)
        return d

    def assert_no_auth(self, reqs, what):
        self.assertTrue(reqs, "no %s request reached the simulator" % what)
        for q in reqs:
            hdrs = {k.lower(): v for k, v in q["headers"].items()}
            self.assertNotIn("authorization", hdrs, "%s carried the API key: %r" % (what, q))
            self.assertEqual(q["auth"], "none", q)


class TestHugeLength(HostileBase):
    """A Content-Length of 10 GiB, a few bytes sent, then the connection closed."""

    def test_cancel_poll(self):
        self.h.set_faults([{"method": "GET", "path": RUN_PATH, "action": "hostile",
                            "kind": "huge_length"}])
        r = self.agent(["--cancel-poll-interval", "200ms"], verbose=True)
        self.assert_command_intact(r)
        self.assert_line(r, "civis-agent: cancel poll failed: cancel poll: GET %s: "
                         "answer larger than %d bytes" % (RUN_PATH, API_CAP))
        self.assert_bounded(r, 1 + SLACK)
        self.assertGreaterEqual(self.applied(), 1)
        # The rest of the API is unaffected: the lines arrive.
        self.h.wait_logs(2)
        msgs = self.h.log_messages()
        self.assertIn("a", msgs)
        self.assertIn("b", msgs)

    def test_log_post_once(self):
        # Not stored, so the retry must deliver every line exactly once.
        self.h.set_faults([{"method": "POST", "path": RUN_PATH + "/logs", "action": "hostile",
                            "kind": "huge_length", "count": 1, "store": False}])
        r = self.agent([], verbose=True, flush="20s")
        self.assert_command_intact(r)
        self.assert_line(r, "civis-agent: log batch not delivered yet: log batch: POST %s/logs: "
                         "answer larger than %d bytes" % (RUN_PATH, LOG_CAP))
        msgs = self.h.log_messages()
        self.assertEqual(msgs.count("a"), 1, msgs)
        self.assertEqual(msgs.count("b"), 1, msgs)

    def test_log_post_always(self):
        self.h.set_faults([{"method": "POST", "path": RUN_PATH + "/logs", "action": "hostile",
                            "kind": "huge_length", "store": False}])
        r = self.agent([], flush="3s")
        self.assert_command_intact(r)
        self.assertRegex(r.stderr.decode(), r"(?m)^civis-agent: \d+ log lines could not be "
                         r"delivered to the run log in time \(final flush timeout 3\.0 s\)$")
        self.assert_bounded(r, 1 + 3 + SLACK)
        self.assertEqual(self.h.log_messages(), [])


class TestEndless(HostileBase):
    """200 with no length and a body that never ends (up to 10 GiB)."""

    def test_cancel_poll(self):
        self.h.set_faults([{"method": "GET", "path": RUN_PATH, "action": "hostile",
                            "kind": "endless"}])
        r = self.agent(["--cancel-poll-interval", "200ms"], verbose=True)
        self.assert_command_intact(r)
        self.assert_line(r, "civis-agent: cancel poll failed: cancel poll: GET %s: "
                         "answer larger than %d bytes" % (RUN_PATH, API_CAP))
        self.assert_bounded(r, 1 + SLACK)
        self.assert_peak_rss_below(r, 64 * 1024)
        self.assertGreaterEqual(self.applied(), 1)

    def test_log_post(self):
        self.h.set_faults([{"method": "POST", "path": RUN_PATH + "/logs", "action": "hostile",
                            "kind": "endless", "count": 1, "store": False}])
        r = self.agent([], verbose=True, flush="20s")
        self.assert_command_intact(r)
        self.assert_line(r, "civis-agent: log batch not delivered yet: log batch: POST %s/logs: "
                         "answer larger than %d bytes" % (RUN_PATH, LOG_CAP))
        self.assert_peak_rss_below(r, 64 * 1024)
        msgs = self.h.log_messages()
        self.assertEqual((msgs.count("a"), msgs.count("b")), (1, 1), msgs)

    def test_heartbeat(self):
        self.h.set_faults([{"method": "POST", "path": RUN_PATH + "/heartbeats",
                            "action": "hostile", "kind": "endless"}])
        r = self.agent(["--heartbeat-interval", "300ms"], verbose=True)
        self.assert_command_intact(r)
        self.assert_line(r, "civis-agent: heartbeat failed: heartbeat: POST %s/heartbeats: "
                         "answer larger than %d bytes" % (RUN_PATH, LOG_CAP))
        self.assert_peak_rss_below(r, 64 * 1024)
        self.assert_bounded(r, 1 + SLACK)


class TestDeepJson(HostileBase):
    """[[[[...]]]] nested 100,000 deep (200 KB: over the answer cap) and
    20,000 deep (40 KB: under the cap, so the parser's nesting limit acts)."""

    def test_cancel_poll_100k(self):
        self.h.set_faults([{"method": "GET", "path": RUN_PATH, "action": "hostile",
                            "kind": "deep_json", "depth": 100000}])
        r = self.agent(["--cancel-poll-interval", "200ms"], verbose=True)
        self.assert_command_intact(r)
        self.assert_line(r, "civis-agent: cancel poll failed: cancel poll: GET %s: "
                         "answer larger than %d bytes" % (RUN_PATH, API_CAP))
        self.assert_bounded(r, 1 + SLACK)

    def test_cancel_poll_20k(self):
        self.h.set_faults([{"method": "GET", "path": RUN_PATH, "action": "hostile",
                            "kind": "deep_json", "depth": 20000}])
        r = self.agent(["--cancel-poll-interval", "200ms"])
        self.assert_command_intact(r)
        self.assert_line(r, "civis-agent: cancel poll: the API's answer was malformed: "
                         "answer nests deeper than 64 levels")
        self.assert_bounded(r, 1 + SLACK)

    def _files(self, depth, message):
        d = self.outdir({"f.txt": b"data\n"})
        self.h.set_faults([{"method": "POST", "path": "/files/", "action": "hostile",
                            "kind": "deep_json", "depth": depth}])
        r = self.agent(["--output-dir", d])
        self.assert_command_intact(r)
        self.assert_line(r, message % os.path.join(d, "f.txt"))
        self.assert_bounded(r, 1 + SLACK)
        self.assertEqual(self.h.outputs(), [])
        return r

    def test_files_100k(self):
        self._files(100000, "civis-agent: cannot upload %%s: upload of f.txt: creating the "
                    "file failed: file creation: POST /files/: answer larger than %d bytes"
                    % API_CAP)

    def test_files_20k(self):
        self._files(20000, "civis-agent: cannot upload %s: upload of f.txt: bad answer to "
                    "POST files/: answer nests deeper than 64 levels")

    def test_files_exit_status_when_command_succeeds(self):
        """The output could not be uploaded: status 3 (documented) instead of 0."""
        d = self.outdir({"f.txt": b"data\n"})
        self.h.set_faults([{"method": "POST", "path": "/files/", "action": "hostile",
                            "kind": "deep_json", "depth": 100000}])
        r = self.agent(["--output-dir", d], script="echo a; echo b >&2; exit 0")
        self.assertEqual(r.returncode, 3, r)

    def test_upload_cmd_100k(self):
        p = os.path.join(self.tmp, "f.txt")
        with open(p, "wb") as fh:
            fh.write(b"data\n")
        self.h.set_faults([{"method": "POST", "path": "/files/", "action": "hostile",
                            "kind": "deep_json", "depth": 100000}])
        r = self.h.run_agent(["upload", p], timeout=60)
        self.assertFalse(r.timed_out, r)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.stdout, b"", r)
        errs = lines(r.stderr)
        self.assertEqual(len(errs), 1, r)
        self.assertIn(p, errs[0])
        self.assertIn("answer larger than %d bytes" % API_CAP, errs[0])
        self.assert_bounded(r, SLACK)


class TestRetryAfter(HostileBase):
    """503 with Retry-After: 999999999 (~31 years)."""

    def test_log_post_bounded_by_final_flush(self):
        self.h.set_faults([{"method": "POST", "path": RUN_PATH + "/logs", "action": "hostile",
                            "kind": "huge_retry_after"}])
        r = self.agent([], flush="4s")
        self.assert_command_intact(r)
        self.assertRegex(r.stderr.decode(), r"(?m)^civis-agent: \d+ log lines could not be "
                         r"delivered to the run log in time \(final flush timeout 4\.0 s\)$")
        self.assert_bounded(r, 1 + 4 + SLACK)
        # It waits as told (clamped), it does not hammer the API meanwhile.
        posts = [q for q in self.h.requests("api") if q["path"].endswith("/logs")]
        self.assertLessEqual(len(posts), 4, posts)

    def test_heartbeat_does_not_hold_the_exit(self):
        self.h.set_faults([{"method": "POST", "path": RUN_PATH + "/heartbeats",
                            "action": "hostile", "kind": "huge_retry_after"}])
        r = self.agent(["--heartbeat-interval", "300ms"], flush="30s")
        self.assert_command_intact(r)
        self.assert_bounded(r, 1 + SLACK)
        msgs = self.h.log_messages()
        self.assertEqual((msgs.count("a"), msgs.count("b")), (1, 1), msgs)

    def test_cancel_poll_does_not_hold_the_exit(self):
        self.h.set_faults([{"method": "GET", "path": RUN_PATH, "action": "hostile",
                            "kind": "huge_retry_after"}])
        r = self.agent(["--cancel-poll-interval", "200ms"], flush="30s")
        self.assert_command_intact(r)
        self.assert_bounded(r, 1 + SLACK)

    @unittest.skipUnless(os.environ.get("CIVIS_HOSTILE_SLOW") == "1",
                         "takes 2 minutes: CIVIS_HOSTILE_SLOW=1")
    def test_clamped_to_two_minutes(self):
        self.h.set_faults([{"method": "POST", "path": RUN_PATH + "/logs", "action": "hostile",
                            "kind": "huge_retry_after", "count": 1}])
        r = self.agent([], flush="300s", timeout=400)
        self.assert_command_intact(r)
        posts = [q for q in self.h.requests("api") if q["path"].endswith("/logs")]
        self.assertGreaterEqual(len(posts), 2, posts)
        gap = posts[1]["mono"] - posts[0]["mono"]
        self.assertLess(gap, 125.0, "the retry waited %.1f s" % gap)
        msgs = self.h.log_messages()
        self.assertEqual((msgs.count("a"), msgs.count("b")), (1, 1), msgs)


class TestRedirect(HostileBase):
    """3xx to another host:port: not followed; the other side sees nothing."""

    def setUp(self):
        super().setUp()
        self.other = Listener()

    def tearDown(self):
        self.other.close()
        super().tearDown()

    def _redirect_all(self, status):
        loc = "http://127.0.0.1:%d/steal" % self.other.port
        self.h.set_faults([
            {"path": "/scripts/", "action": "hostile", "kind": "redirect",
             "location": loc, "status": status},
            {"path": "/files", "action": "hostile", "kind": "redirect",
             "location": loc, "status": status}])

    def _check(self, status):
        self._redirect_all(status)
        d = self.outdir({"f.txt": b"data\n"})
        r = self.agent(["--output-dir", d, "--cancel-poll-interval", "200ms",
                        "--heartbeat-interval", "300ms"], verbose=True, flush="3s")
        self.assert_command_intact(r)
        self.assertEqual(self.other.requests, [], "the redirect was followed")
        tail = "unexpected redirect to 127.0.0.1 (not followed)"
        self.assert_line(r, "civis-agent: log batch not delivered yet: log batch: POST %s/logs: %s"
                         % (RUN_PATH, tail))
        self.assert_line(r, "civis-agent: heartbeat failed: heartbeat: POST %s/heartbeats: %s"
                         % (RUN_PATH, tail))
        self.assert_line(r, "civis-agent: cancel poll failed: cancel poll: GET %s: %s"
                         % (RUN_PATH, tail))
        self.assertTrue(any(ln.startswith("civis-agent: cannot upload %s/f.txt: " % d)
                            and ln.endswith(tail) for ln in lines(r.stderr)), r)
        self.assert_bounded(r, 1 + 3 + SLACK)
        self.h.assert_no_violations()
        self.assertEqual(self.h.requests("storage"), [])

    def test_302(self):
        self._check(302)

    def test_307(self):
        self._check(307)

    def test_default_location_is_storage(self):
        """The simulator's own target (its storage port) records a violation
        if the key follows: none may be recorded."""
        self.h.set_faults([{"path": "/scripts/", "action": "hostile", "kind": "redirect"}])
        r = self.agent(["--cancel-poll-interval", "200ms"], flush="3s")
        self.assert_command_intact(r)
        self.assertEqual(self.h.requests("storage"), [])
        self.h.assert_no_violations()


class TestUploadUrlToApi(HostileBase):
    """POST /files/ and /files/multipart hand out upload URLs on the API
    host: the uploads must not carry the API key there."""

    def setUp(self):
        super().setUp()
        self.h.set_faults([{"path": "/files", "action": "hostile", "kind": "upload_url_to_api"}])

    def s3_requests(self):
        # Served by the API port, recorded on its storage side.
        return [q for q in self.h.requests() if q["server"] == "api"
                and q["path"].startswith("/s3/")]

    def test_form_post(self):
        d = self.outdir({"f.txt": b"form data\n"})
        r = self.agent(["--output-dir", d])
        self.assert_command_intact(r)
        self.assert_said(r, "civis-agent: uploaded %s/f.txt as file 1001 (10 bytes)" % d)
        self.assert_no_auth(self.s3_requests(), "upload to the API host")
        self.h.assert_no_violations()
        self.assertEqual(self.h.file_data(1001), b"form data\n")
        self.assertEqual(len(self.h.outputs()), 1)

    def test_multipart(self):
        data = os.urandom(6 << 20)
        d = self.outdir({"big.bin": data})
        r = self.agent(["--output-dir", d, "--multipart-threshold", "5M"], timeout=120)
        self.assert_command_intact(r)
        s3 = self.s3_requests()
        self.assertGreaterEqual(len([q for q in s3 if q["method"] == "PUT"]), 2, s3)
        self.assert_no_auth(s3, "part upload to the API host")
        self.assert_said(r, "civis-agent: uploaded %s/big.bin as file 1001 (%d bytes)"
                         % (d, len(data)))
        self.h.assert_no_violations()
        self.assertEqual(self.h.file_data(1001), data)

    def test_upload_cmd(self):
        p = os.path.join(self.tmp, "g.txt")
        with open(p, "wb") as fh:
            fh.write(b"upload cmd\n")
        r = self.h.run_agent(["upload", p], timeout=60)
        self.assertFalse(r.timed_out, r)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout, b"1001\tg.txt\n", r)
        self.assert_no_auth(self.s3_requests(), "upload to the API host")
        self.h.assert_no_violations()


if __name__ == "__main__":
    unittest.main()
