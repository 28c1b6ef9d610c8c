#!/usr/bin/env python3
"""test_proxy.py: build/civis-agent never sends a plain-http (loopback)
request through a proxy named in the environment.

    python3 tests/integration/test_proxy.py [-v] [TestClass.test_name]

A recording "proxy" listens on loopback and keeps every byte it is sent;
the agent runs a command against the simulator's http://127.0.0.1 endpoint
with http_proxy, HTTP_PROXY, https_proxy, HTTPS_PROXY, all_proxy and
ALL_PROXY all pointing at it (and no NO_PROXY). What is asserted:

  - the proxy saw no connection at all, so never the API key;
  - the simulator got the run log lines, the heartbeat-free run ended
    with the command's status, and the output file was uploaded (the
    presigned storage URL is plain http on loopback too) and registered,
    with no Authorization header sent to storage;
  - the same with every variable set to a proxy URL that carries
    credentials: they appear nowhere in stderr.
"""

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "sim"))

from harness import SimHarness, agent_path  # noqa: E402

JOB, RUN = 31, 41
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
              "ALL_PROXY")


class RecordingProxy:
    """Accepts connections on 127.0.0.1, records what each sends, answers
    502 and closes: a proxy that must never be used."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.data = b""
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
            c.settimeout(1.0)
            try:
                got = c.recv(65536)
                with self.lock:
                    self.data += got
                c.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            finally:
                c.close()

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


@unittest.skipUnless(os.access(agent_path(), os.X_OK), "agent not built")
class PlainHttpNeverProxied(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = SimHarness(job_id=JOB, run_id=RUN)
        cls.h.start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()

    def setUp(self):
        self.h.reset()
        self.proxy = RecordingProxy()
        self.out = tempfile.mkdtemp(prefix="civis-proxy-")
        self.addCleanup(shutil.rmtree, self.out, True)
        self.addCleanup(self.proxy.close)

    def run_with_proxy(self, proxy_url):
        env = {v: proxy_url for v in PROXY_VARS}
        env.pop("NO_PROXY", None)
        env.pop("no_proxy", None)
        base = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
        script = ("echo line-one; echo line-two >&2; "
                  "printf 'result' > %s/result.txt; exit 5" % self.out)
        return self.h.run_agent(["-v", "--output-dir", self.out, "--", "sh", "-c", script],
                                env=self.h.env(env, base=base), timeout=60)

    def check_run(self, r, ctx):
        self.assertEqual(r.returncode, 5, ctx)
        msgs = [m["message"] for m in self.h.logs()]
        self.assertIn("line-one", msgs, ctx)
        self.assertIn("line-two", msgs, ctx)
        files = self.h.files()
        names = [f.get("name") for f in files]
        self.assertIn("result.txt", names, ctx)
        self.assertEqual(len(self.h.outputs()), 1, ctx)
        storage = self.h.requests(server="storage")
        self.assertTrue(storage, ctx)
        for req in storage:
            self.assertEqual(req.get("auth"), "none", ctx)
        # nothing at all reached the proxy, so not the key either
        time.sleep(0.2)
        with self.proxy.lock:
            self.assertEqual(self.proxy.connections, 0, ctx)
            self.assertEqual(self.proxy.data, b"", ctx)
            self.assertNotIn(self.h.api_key.encode(), self.proxy.data)

    def test_loopback_endpoint_ignores_every_proxy_variable(self):
        r = self.run_with_proxy("http://127.0.0.1:%d" % self.proxy.port)
        self.check_run(r, r.stderr.decode("utf-8", "replace")[-2000:])

    def test_proxy_credentials_never_shown(self):
        r = self.run_with_proxy("http://alice:Pr0xyPassw0rd@127.0.0.1:%d" % self.proxy.port)
        err = r.stderr.decode("utf-8", "replace")
        self.check_run(r, err[-2000:])
        self.assertNotIn("Pr0xyPassw0rd", err)
        self.assertNotIn("Pr0xyPassw0rd", "\n".join(m["message"] for m in self.h.logs()))


if __name__ == "__main__":
    unittest.main()
