"""Secrets never reach the run log: the command prints its own environment."""
import base64
import json
import os
import sys
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))
import harness  # noqa: E402
from harness import SimHarness  # noqa: E402

SECRETS = {
    "DB_PASSWORD": "pa55-w0rd-Sh0uld-N0t-Leak",
    "GITHUB_TOKEN": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "CUSTOM_THING": "custom/value with spaces&sym=1",
    "MULTI_SECRET": "first-line-secret\nsecond-line-secret",
}
PLAIN = {"PLAIN_VALUE": "visible-value-123", "SHORT_TOKEN": "abc"}


class RedactTest(unittest.TestCase):
    sim = None

    @classmethod
    def setUpClass(cls):
        if not os.access(harness.agent_path(), os.X_OK):
            raise unittest.SkipTest("no agent binary")
        cls.sim = SimHarness()
        cls.sim.start()

    @classmethod
    def tearDownClass(cls):
        if cls.sim:
            cls.sim.stop()

    def setUp(self):
        self.sim.reset()

    def run_env(self, args, script):
        env = self.sim.env(dict(SECRETS, **PLAIN))
        return self.sim.run_agent(args + ["--", "sh", "-c", script], env=env, timeout=60)

    def log_text(self):
        return "\n".join(l["message"] for l in self.sim.logs())

    def test_environment_printed(self):
        key = self.sim.api_key
        enc = [
            json.dumps(SECRETS["CUSTOM_THING"])[1:-1],
            urllib.parse.quote(SECRETS["CUSTOM_THING"], safe=""),
            base64.b64encode(SECRETS["DB_PASSWORD"].encode()).decode(),
        ]
        script = "env; " + "; ".join("echo '%s'" % e for e in enc) + \
                 "; printf 'split %s' '" + SECRETS["GITHUB_TOKEN"][:10] + "'; sleep 0.05; " \
                 "printf '%s\\n' '" + SECRETS["GITHUB_TOKEN"][10:] + "'"
        r = self.run_env(["--redact", "CUSTOM_*"], script)
        self.assertEqual(r.returncode, 0)
        text = self.log_text()
        for name, value in SECRETS.items():
            for part in [value] + value.split("\n"):
                self.assertNotIn(part, text, "%s leaked" % name)
        self.assertNotIn(key, text, "CIVIS_API_KEY leaked")
        for e in enc:
            self.assertNotIn(e, text)
        self.assertIn("DB_PASSWORD=[REDACTED]", text)
        self.assertIn("CIVIS_API_KEY=[REDACTED]", text)
        self.assertIn("PLAIN_VALUE=visible-value-123", text)
        self.assertIn("SHORT_TOKEN=abc", text, "values under 6 bytes are not masked")
        # the tee copy stays byte exact unless --redact-tee
        self.assertIn(SECRETS["DB_PASSWORD"].encode(), r.stdout)

    def test_redact_tee_and_no_defaults(self):
        r = self.run_env(["--redact-tee", "--no-default-redact"], "env")
        self.assertEqual(r.returncode, 0)
        text = self.log_text()
        self.assertNotIn(self.sim.api_key, text)          # always masked
        self.assertNotIn(self.sim.api_key.encode(), r.stdout)
        self.assertIn(SECRETS["DB_PASSWORD"], text, "defaults off: *_PASSWORD not masked")

    def test_agent_messages_never_print_the_key(self):
        r = self.run_env(["-v"], "echo hi")
        self.assertNotIn(self.sim.api_key.encode(), r.stderr)


if __name__ == "__main__":
    unittest.main()
