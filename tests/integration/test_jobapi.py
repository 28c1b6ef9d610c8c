#!/usr/bin/env python3
"""test_jobapi.py: the job API and CIVIS_OUTPUT (issue 13, points 1 and 2),
with the real agent, its real socket and the simulator (and through Prism).

- CIVIS_OUTPUT: KEY=VALUE and KEY<<DELIM lines become ONE JSON value named
  --json-output-name, registered as a JSONValue output; a value that parses
  as JSON stays JSON; a malformed line is named by its number; over the
  API's 1,000,000 bytes: a clear error, exit 3, the other outputs still go.
- `civis-agent output json NAME JSON`, `civis-agent output TYPE ID` and
  `civis-agent upload PATH` inside the command go through the agent's
  socket and are registered when the command exits, after the output
  directory's files, each once.
- `civis-agent mask VALUE` (and `-` from stdin): what the command prints
  afterwards is masked in the run log.
- Without the socket, `civis-agent output` works on its own.
- The socket: mode 0600, and the agent removes it when it is done."""

import json
import os
import stat
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import util  # noqa: E402,F401
from harness import SimHarness, agent_path  # noqa: E402

AGENT = agent_path()


def sh(script):
    return ["--", "sh", "-c", script]


class JobApi(unittest.TestCase):
    use_prism = False

    def run_job(self, args, extra_env=None, timeout=90):
        with SimHarness(use_prism=self.use_prism) as h:
            res = h.run_agent(args, timeout=timeout, extra_env=extra_env)
            h.wait_logs(1, timeout=20)
            out = {
                "res": res,
                "err": res.stderr.decode("utf-8", "replace"),
                "stdout": res.stdout.decode("utf-8", "replace"),
                "outputs": h.outputs(),
                "values": h.json_values(),
                "msgs": h.log_messages(),
                "files": h.files(),
            }
            h.assert_no_violations()
            if self.use_prism:
                h.assert_no_prism_violations()
            return out

    @staticmethod
    def texts(r):
        return [m if isinstance(m, str) else m["message"] for m in r["msgs"]]

    def value_of(self, r, object_id):
        for v in r["values"]:
            if v["id"] == object_id:
                return v
        self.fail("no JSON value %r in %r" % (object_id, r["values"]))

    def test_civis_output_becomes_one_json_value(self):
        script = (
            'test -n "$CIVIS_OUTPUT" && test -f "$CIVIS_OUTPUT" || exit 9\n'
            'echo rows=10 >> "$CIVIS_OUTPUT"\n'
            'echo \'meta={"a": [1, 2]}\' >> "$CIVIS_OUTPUT"\n'
            'echo name=plain text >> "$CIVIS_OUTPUT"\n'
            'printf "notes<<EOF\\nline one\\nline two\\nEOF\\n" >> "$CIVIS_OUTPUT"\n'
            'echo "this line is wrong" >> "$CIVIS_OUTPUT"\n'
            'echo rows=11 >> "$CIVIS_OUTPUT"\n')
        r = self.run_job(["--json-output-name", "results"] + sh(script))
        self.assertEqual(r["res"].returncode, 0, r["err"])
        outs = [o for o in r["outputs"] if o["objectType"] == "JSONValue"]
        self.assertEqual(len(outs), 1, r["outputs"])
        v = self.value_of(r, outs[0]["objectId"])
        self.assertEqual(v["name"], "results")
        self.assertEqual(v["value"], {"rows": 11, "meta": {"a": [1, 2]}, "name": "plain text",
                                      "notes": "line one\nline two"})
        self.assertIn("civis-agent: CIVIS_OUTPUT line 8: neither KEY=VALUE nor KEY<<DELIMITER; "
                      "the line is skipped", self.texts(r))

    def test_civis_output_too_big_exits_3_and_other_outputs_go(self):
        with tempfile.TemporaryDirectory() as d:
            script = ('python3 -c "import os; open(os.environ[\'CIVIS_OUTPUT\'], \'w\')'
                      '.write(\'big=\' + \'x\' * 1000100 + \'\\n\')"; echo hi > %s/a.txt' % d)
            r = self.run_job(["--output-dir", d] + sh(script))
        self.assertEqual(r["res"].returncode, 3, r["err"])
        self.assertIn("CIVIS_OUTPUT", r["err"])
        self.assertIn("1000000", r["err"].replace(",", ""))
        self.assertEqual([o["objectType"] for o in r["outputs"]], ["File"], r["outputs"])

    def test_output_commands_through_the_socket(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "up.csv"), "w") as fh:
                fh.write("a,b\n1,2\n")
            script = (
                'set -e\n'
                'test -S "$CIVIS_AGENT_SOCKET"\n'
                'stat -c %%a "$CIVIS_AGENT_SOCKET" > %(d)s/mode\n'
                '%(a)s output json metrics \'{"auc": 0.91}\'\n'
                '%(a)s output Table 77\n'
                '%(a)s output table 77\n'
                '%(a)s upload %(d)s/up.csv\n'
                'echo "$CIVIS_AGENT_SOCKET" > %(d)s/sock\n' % {"a": AGENT, "d": d})
            r = self.run_job(sh(script))
            with open(os.path.join(d, "mode")) as fh:
                mode = fh.read().strip()
            with open(os.path.join(d, "sock")) as fh:
                sock = fh.read().strip()
        self.assertEqual(r["res"].returncode, 0, r["err"])
        self.assertEqual(mode, "600")
        self.assertFalse(os.path.exists(sock), "the agent left its socket behind")
        kinds = [(o["objectType"], o["objectId"]) for o in r["outputs"]]
        self.assertEqual(kinds.count(("Table", 77)), 1, kinds)       # once, though asked twice
        jv = [i for t, i in kinds if t == "JSONValue"]
        self.assertEqual(len(jv), 1, kinds)
        self.assertEqual(self.value_of(r, jv[0])["value"], {"auc": 0.91})
        files = [i for t, i in kinds if t == "File"]
        self.assertEqual(len(files), 1, kinds)
        self.assertEqual([f["name"] for f in r["files"] if f["id"] == files[0]], ["up.csv"])
        # Each command printed "<id>\t<what>" as `upload` does.
        lines = r["stdout"].splitlines()
        self.assertIn("%d\tmetrics" % jv[0], lines)
        self.assertIn("77\tTable", lines)
        self.assertIn("%d\tup.csv" % files[0], lines)

    def test_expires_at_never(self):
        """The contract takes "expiresAt": null (issue 13): the Prism variant
        holds the request to it."""
        with tempfile.TemporaryDirectory() as d:
            r = self.run_job(["--expires-at", "never", "--output-dir", d] +
                             sh("echo kept > %s/keep.txt; %s upload --name up.txt %s/keep.txt"
                                % (d, AGENT, d)))
        self.assertEqual(r["res"].returncode, 0, r["err"])
        self.assertEqual(sorted(f["name"] for f in r["files"]), ["keep.txt", "up.txt"])
        self.assertTrue(all(f["expiresAt"] is None for f in r["files"]), r["files"])

    def test_mask_at_run_time(self):
        secret = "runtime-Secret-9f8e7d"
        script = ('echo "before %(s)s"; printf %%s "%(s)s" | %(a)s mask -; '
                  'echo "after %(s)s"; %(a)s mask short; exit 0' % {"s": secret, "a": AGENT})
        r = self.run_job(sh(script))
        self.assertEqual(r["res"].returncode, 0, r["err"])
        texts = self.texts(r)
        self.assertIn("after [REDACTED]", texts)
        self.assertFalse(any("after " + secret in t for t in texts), texts)
        self.assertIn("before " + secret, texts)           # masking starts with the call
        self.assertIn("civis-agent: mask: a secret to mask is at least 6 bytes", r["err"])

    def test_output_on_its_own_without_socket(self):
        with SimHarness(use_prism=self.use_prism) as h:
            env = h.env()
            env.pop("CIVIS_AGENT_SOCKET", None)
            res = h.run_command([AGENT, "output", "json", "solo", "[1, 2, 3]"], env=env,
                                timeout=60)
            res2 = h.run_command([AGENT, "output", "Report", "5"], env=env, timeout=60)
            bad = h.run_command([AGENT, "output", "Car", "5"], env=env, timeout=60)
            outs = h.outputs()
            vals = h.json_values()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res2.returncode, 0, res2.stderr)
        self.assertEqual(bad.returncode, 2)
        self.assertEqual(bad.stderr.decode().splitlines()[0],
                         "civis-agent: output: 'Car' is not an output type (File, Table, "
                         "Report, Project, Credential, JSONValue)")
        self.assertEqual(sorted(o["objectType"] for o in outs), ["JSONValue", "Report"])
        self.assertEqual([v["value"] for v in vals], [[1, 2, 3]])

    def test_mask_without_agent(self):
        env = dict(os.environ)
        env.pop("CIVIS_AGENT_SOCKET", None)
        res = SimHarness.run_command([AGENT, "mask", "abcdefgh"], env=env, timeout=30)
        self.assertEqual(res.returncode, 1)
        self.assertEqual(res.stderr.decode().strip(),
                         "civis-agent: mask: no agent to tell (CIVIS_AGENT_SOCKET is not set): "
                         "run it inside a command started by civis-agent")


class JobApiPrism(JobApi):
    use_prism = True


if __name__ == "__main__":
    unittest.main()
