#!/usr/bin/env python3
"""test_outputs.py: build/civis-agent --output-dir and `civis-agent upload`
against the simulator (tests/sim/harness.py).

    python3 tests/integration/test_outputs.py [-v] [TestClass.test_name]

Checks what the simulator stored, byte for byte (SHA-256 of every source
file and of every member of a stored .tar.gz), when it was sent relative to
the command's end, which outputs were registered and in what order, the
agent's messages for odd inputs, and exit statuses."""

import gzip
import hashlib
import io
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "sim"))

from harness import SimHarness, agent_path  # noqa: E402

AGENT_EXIT_OUTPUT_FAILED = 3


def sha(data):
    return hashlib.sha256(data).hexdigest()


def file_sha(path):
    with open(path, "rb") as f:
        return sha(f.read())


def civis_name(rel):
    """The agent's Civis name: the path relative to the output directory."""
    return rel


def rel_of(name):
    return name.replace("%2F", "/").replace("%25", "%")


def strip_member(name, top):
    """A tar member's path inside the archived directory, with or without
    the directory's own name (or "./") in front."""
    if name.startswith("./"):
        name = name[2:]
    if name.startswith(top + "/"):
        name = name[len(top) + 1:]
    return name


def sh(script):
    return ["--", "sh", "-c", script]


@unittest.skipUnless(os.access(agent_path(), os.X_OK), "build/civis-agent not built")
class OutputsBase(unittest.TestCase):
    h = None

    @classmethod
    def setUpClass(cls):
        cls.h = SimHarness()
        cls.h.start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()

    def setUp(self):
        self.h.reset()
        self.tmp = tempfile.mkdtemp(prefix="civis-outputs-")
        self.out = os.path.join(self.tmp, "out")
        os.mkdir(self.out)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------ helpers

    def run_agent(self, args, timeout=90, extra_env=None):
        res = self.h.run_agent(args, timeout=timeout, extra_env=extra_env)
        self.assertFalse(res.timed_out, "agent timed out: %r" % (res,))
        return res

    def files_by_id(self):
        return {f["id"]: f for f in self.h.files()}

    def registered(self):
        """The registered files, in registration order: [(name, file record)]."""
        files = self.files_by_id()
        out = []
        for o in self.h.outputs():
            self.assertEqual(o["objectType"], "File")
            f = files[o["objectId"]]
            out.append((f["name"], f))
        return out

    def registered_names(self):
        return [n for n, _ in self.registered()]

    def upload_times(self, name):
        """Epoch times of the storage requests that carried file `name`."""
        reqs = {r["seq"]: r for r in self.h.requests()}
        times = []
        for f in self.h.files():
            if f["name"] != name:
                continue
            for u in f.get("uploads") or []:
                times.append(reqs[u["requestSeq"]]["time"])
            for p in f.get("parts") or []:
                if "requestSeq" in p:
                    times.append(reqs[p["requestSeq"]]["time"])
        return times

    def write(self, rel, data):
        p = os.path.join(self.out, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        return p


class TestDuringRun(OutputsBase):
    def test_files_uploaded_while_the_command_runs(self):
        marker = os.path.join(self.tmp, "end")
        script = ("sleep 0.7; printf early > '{o}/early.txt'; "
                  "mkdir -p '{o}/sub/deep'; sleep 0.3; printf nested > '{o}/sub/deep/n.txt'; "
                  "sleep 2.5; printf late > '{o}/late.txt'; date +%s.%N > '{m}'"
                  ).format(o=self.out, m=marker)
        res = self.run_agent(["--output-dir", self.out] + sh(script))
        self.assertEqual(res.returncode, 0, res)
        with open(marker) as f:
            end = float(f.read())
        early = self.upload_times("early.txt")
        nested = self.upload_times(civis_name("sub/deep/n.txt"))
        self.assertTrue(early and nested, self.h.files())
        self.assertLess(min(early), end - 1.0, "early.txt went only at exit")
        self.assertLess(min(nested), end - 1.0, "a file in a new sub-directory went only at exit")
        # registered at exit, each once (started in name order, several in
        # flight: the API may record neighbours in either order)
        self.assertEqual(sorted(self.registered_names()),
                         ["early.txt", "late.txt", "sub/deep/n.txt"])
        for name, f in self.registered():
            src = os.path.join(self.out, rel_of(name))
            self.assertEqual(f["sha256"], file_sha(src), name)
        self.h.assert_no_violations()

    def test_changed_after_upload_is_uploaded_again(self):
        script = ("sleep 0.7; printf v1 > '{o}/c.txt'; sleep 1.5; printf v2 >> '{o}/c.txt'"
                  ).format(o=self.out)
        res = self.run_agent(["--output-dir", self.out] + sh(script))
        self.assertEqual(res.returncode, 0, res)
        uploads = [f for f in self.h.files() if f["name"] == "c.txt" and f["complete"]]
        self.assertEqual(len(uploads), 2, uploads)
        reg = self.registered()
        self.assertEqual(len(reg), 1)
        self.assertEqual(reg[0][1]["sha256"], sha(b"v1v2"))


class TestContent(OutputsBase):
    def test_sha256_of_files_and_archive_members(self):
        rnd = os.urandom
        srcs = {
            "a.csv": b"x,y\n" + rnd(3000),
            "empty": b"",
            "nested/b.bin": rnd(70000),
            "logs/1.log": b"one\n" * 1000,
            "logs/deeper/2.log": rnd(5000),
            "big.bin": rnd(6 << 20),     # over the threshold below: multipart
        }
        for rel, data in srcs.items():
            self.write(rel, data)
        res = self.run_agent(["--output-dir", self.out, "--archive", "logs",
                              "--multipart-threshold", "5M"] + sh("true"))
        self.assertEqual(res.returncode, 0, res)
        reg = dict(self.registered())
        self.assertEqual(sorted(reg), ["a.csv", "big.bin", "empty", "logs.tar.gz", "nested/b.bin"])
        self.assertEqual(sorted(self.registered_names()), sorted(reg))
        for rel in ("a.csv", "empty", "nested/b.bin", "big.bin"):
            self.assertEqual(reg[civis_name(rel)]["sha256"], sha(srcs[rel]), rel)
        self.assertEqual(reg["empty"]["size"], 0)
        self.assertEqual(reg["big.bin"]["kind"], "multipart")
        data = self.h.file_data(reg["logs.tar.gz"]["id"])
        self.assertEqual(sha(data), reg["logs.tar.gz"]["sha256"])
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
            members = {strip_member(m.name, "logs"): m for m in t.getmembers() if m.isfile()}
            self.assertEqual(set(members), {"1.log", "deeper/2.log"})
            for n, m in members.items():
                self.assertEqual(sha(t.extractfile(m).read()), sha(srcs["logs/" + n]), n)

    def test_gzip(self):
        self.write("g.txt", b"compress me\n" * 500)
        res = self.run_agent(["--output-dir", self.out, "--gzip"] + sh("true"))
        self.assertEqual(res.returncode, 0, res)
        reg = dict(self.registered())
        self.assertEqual(list(reg), ["g.txt.gz"])
        data = self.h.file_data(reg["g.txt.gz"]["id"])
        self.assertEqual(gzip.decompress(data), b"compress me\n" * 500)

    def test_archive_dirs(self):
        self.write("top.txt", b"top")
        self.write("d1/a", b"a")
        self.write("d2/b", b"b")
        res = self.run_agent(["--output-dir", self.out, "--archive-dirs"] + sh("true"))
        self.assertEqual(res.returncode, 0, res)
        self.assertEqual(sorted(self.registered_names()), ["d1.tar.gz", "d2.tar.gz", "top.txt"])

    def test_output_dir_is_created(self):
        out = os.path.join(self.tmp, "made", "by", "agent")
        res = self.run_agent(["--output-dir", out] + sh("printf x > '%s/x'" % out))
        self.assertEqual(res.returncode, 0, res)
        self.assertEqual(self.registered_names(), ["x"])


class TestBadInput(OutputsBase):
    def test_odd_names_fifo_links_vanished(self):
        long_name = "L" * 255
        self.write("with space.txt", b"s")
        self.write("new\nline", b"n")
        os.makedirs(os.path.join(self.out, "sub"))
        with open(os.path.join(os.fsencode(self.out), b"bad\xff.bin"), "wb") as f:
            f.write(b"b")
        self.write(long_name, b"l")
        self.write("sub/" + long_name, b"l2")
        os.mkfifo(os.path.join(self.out, "ff"))
        os.symlink("/etc/passwd", os.path.join(self.out, "outside"))
        os.symlink("loop2", os.path.join(self.out, "loop1"))
        os.symlink("loop1", os.path.join(self.out, "loop2"))
        os.symlink("with space.txt", os.path.join(self.out, "inside"))
        script = ("sleep 0.7; printf tmp > '{o}/tmp.part'; mv '{o}/tmp.part' '{o}/final.txt'; "
                  "printf gone > '{o}/gone.txt'; sleep 0.5; rm '{o}/gone.txt'").format(o=self.out)
        # -v: the routine "uploaded <name>" lines go to stderr too
        res = self.run_agent(["-v", "--output-dir", self.out] + sh(script))
        self.assertEqual(res.returncode, 0, res)
        err = res.stderr.decode("utf-8", "replace")
        o = self.out
        self.assertIn("skipping %s/ff: not a regular file (FIFO)" % o, err)
        self.assertIn("skipping %s/outside: points outside the output directory" % o, err)
        self.assertIn("skipping %s/loop1: symlink loop" % o, err)
        self.assertIn("%s/gone.txt was removed before the command exited: not registered" % o,
                      err)
        self.assertIn("%s/new\\nline" % o, err)
        self.assertIn("%s/bad\\xff.bin" % o, err)
        self.assertIn('"%s/with space.txt"' % o, err)
        names = self.registered_names()
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(set(names), {
            "with space.txt", "new\nline", "bad\ufffd.bin", long_name, "sub/" + long_name,
            "inside", "final.txt"})
        reg = dict(self.registered())
        self.assertEqual(reg["inside"]["sha256"], sha(b"s"))
        self.assertEqual(reg["final.txt"]["sha256"], sha(b"tmp"))

    def test_storage_error_gives_distinct_exit_status(self):
        # every form POST to storage answers an S3 XML 403; the multipart file
        # (PUT parts) still goes and is registered
        self.h.set_faults([{"server": "storage", "method": "POST", "path": "/civis-sim-files/",
                            "action": "status", "status": 403}])
        self.write("small.txt", b"small")
        self.write("big.bin", os.urandom(6 << 20))
        res = self.run_agent(["--output-dir", self.out, "--multipart-threshold", "5M"]
                             + sh("true"))
        self.assertEqual(res.returncode, AGENT_EXIT_OUTPUT_FAILED, res)
        err = res.stderr.decode("utf-8", "replace")
        self.assertIn("cannot upload %s/small.txt" % self.out, err)
        self.assertIn("AccessDenied", err)
        self.assertEqual(self.registered_names(), ["big.bin"])
        # the command's own failure wins over the outputs'
        self.h.reset()
        self.h.set_faults([{"server": "storage", "method": "POST", "path": "/civis-sim-files/",
                            "action": "status", "status": 403}])
        res = self.run_agent(["--output-dir", self.out] + sh("exit 5"))
        self.assertEqual(res.returncode, 5, res)

    def test_over_5_tib_refused_before_sending(self):
        with open(os.path.join(self.out, "huge.bin"), "wb") as f:
            try:
                f.truncate((5 << 40) + 1)
            except OSError:
                self.skipTest("no sparse 5 TiB file here")
        self.write("ok.txt", b"ok")
        res = self.run_agent(["--output-dir", self.out] + sh("true"))
        self.assertEqual(res.returncode, AGENT_EXIT_OUTPUT_FAILED, res)
        self.assertIn(b"huge.bin: 5497558138881 bytes is over the 5 TiB", res.stderr)
        self.assertEqual([f["name"] for f in self.h.files()], ["ok.txt"])
        self.assertEqual(self.registered_names(), ["ok.txt"])

    def test_missing_archive_fails(self):
        self.write("a", b"a")
        res = self.run_agent(["--output-dir", self.out, "--archive", "nope"] + sh("true"))
        self.assertEqual(res.returncode, AGENT_EXIT_OUTPUT_FAILED, res)
        self.assertIn(b"cannot archive", res.stderr)
        self.assertEqual(self.registered_names(), ["a"])


class TestUploadCommand(OutputsBase):
    def upload(self, args, env=None):
        return self.h.run_command([agent_path(), "upload"] + args,
                                  env=self.h.env(env), timeout=60)

    def test_upload_paths(self):
        a = self.write("a.txt", b"aaa")
        b = self.write("two words.txt", b"bbb")
        d = os.path.join(self.out, "dir")
        self.write("dir/x", b"x")
        self.write("dir/y/z", b"z")
        res = self.upload([a, b, d])
        self.assertEqual(res.returncode, 0, res)
        lines = res.stdout.decode().splitlines()
        self.assertEqual(len(lines), 3, res)
        ids = [int(l.split("\t")[0]) for l in lines]
        self.assertEqual([l.split("\t")[1] for l in lines], ["a.txt", "two words.txt", "dir.tar.gz"])
        files = self.files_by_id()
        self.assertEqual(files[ids[0]]["sha256"], sha(b"aaa"))
        self.assertEqual([o["objectId"] for o in self.h.outputs()], ids)
        with tarfile.open(fileobj=io.BytesIO(self.h.file_data(ids[2])), mode="r:gz") as t:
            got = sorted(strip_member(m.name, "dir") for m in t.getmembers() if m.isfile())
        self.assertEqual(got, ["x", "y/z"])

    def test_upload_options(self):
        a = self.write("a.txt", b"hello " * 100)
        res = self.upload(["--gzip", "--name", "custom.gz", "--no-register",
                           "--expires-at", "never", a])
        self.assertEqual(res.returncode, 0, res)
        fid, name = res.stdout.decode().rstrip("\n").split("\t")
        self.assertEqual(name, "custom.gz")
        self.assertEqual(self.h.outputs(), [])
        f = self.files_by_id()[int(fid)]
        self.assertIsNone(f["expiresAt"])
        self.assertEqual(gzip.decompress(self.h.file_data(int(fid))), b"hello " * 100)

    def test_upload_failures_and_usage(self):
        a = self.write("a.txt", b"a")
        missing = os.path.join(self.out, "missing")
        fifo = os.path.join(self.out, "ff")
        os.mkfifo(fifo)
        res = self.upload([missing, a, fifo])
        self.assertEqual(res.returncode, 1, res)
        err = res.stderr.decode()
        self.assertIn("civis-agent: upload: %s: No such file or directory" % missing, err)
        self.assertIn("civis-agent: upload: %s: not a regular file (FIFO)" % fifo, err)
        lines = res.stdout.decode().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].endswith("\ta.txt"))
        self.assertEqual(len(self.h.outputs()), 1)
        for args in ([], ["--name", "x", a, a], ["--bogus", a], ["--expires-at", "tomorrow", a],
                     ["--multipart-threshold", "1K", a], ["--upload-concurrency", "0", a]):
            r = self.upload(args)
            self.assertEqual(r.returncode, 2, (args, r))
            self.assertTrue(r.stderr.startswith(b"civis-agent: upload: "), r)
        r = self.upload(["--help"])
        self.assertEqual(r.returncode, 0)
        self.assertIn(b"Usage: civis-agent upload", r.stdout)

    def test_upload_storage_error(self):
        self.h.set_faults([{"server": "storage", "action": "status", "status": 403}])
        a = self.write("a.txt", b"a")
        res = self.upload([a])
        self.assertEqual(res.returncode, 1, res)
        self.assertEqual(res.stdout, b"")
        self.assertIn(b"civis-agent: upload: " + a.encode() + b": ", res.stderr)
        self.assertIn(b"AccessDenied", res.stderr)

    def test_upload_without_environment(self):
        a = self.write("a.txt", b"a")
        env = {k: v for k, v in os.environ.items()
               if k not in ("CIVIS_API_KEY", "CIVIS_JOB_ID", "CIVIS_RUN_ID", "CIVIS_API_ENDPOINT")}
        r = self.h.run_command([agent_path(), "upload", a], env=env, timeout=30)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(b"CIVIS_API_KEY", r.stderr)


EVIL = "evil\ncivis-agent: all outputs uploaded OK\x1b[2J"
EVIL_SHOWN = r"evil\ncivis-agent: all outputs uploaded OK\x1b[2J"
SECRET = "Sup3rS3cretValue"


class TestHostileNames(OutputsBase):
    """Issue 12 points 3 and 4: names are user-controlled strings."""

    def upload(self, args, env=None):
        return self.h.run_command([agent_path(), "upload"] + args,
                                  env=self.h.env(env), timeout=60)

    def assert_no_forged_line(self, err, log):
        for line in err.split("\n")[:-1]:
            if os.environ.get("CIVIS_TEST_QUICK") and re.match(r"--\d+-- ", line):
                continue    # valgrind's own notes (openat2 is unknown to valgrind 3.19)
            self.assertTrue(line.startswith("civis-agent: "), repr(line))
        self.assertNotIn("\x1b", err)
        for m in log:
            self.assertNotIn("\n", m)
            self.assertNotIn("\x1b", m)

    def test_forged_line_in_a_file_name_is_escaped(self):
        # storage refuses every form POST: the library's error names the file too
        self.h.set_faults([{"server": "storage", "action": "status", "status": 403}])
        self.write(EVIL, b"x")
        res = self.run_agent(["--output-dir", self.out] + sh("true"))
        self.assertEqual(res.returncode, AGENT_EXIT_OUTPUT_FAILED, res)
        err = res.stderr.decode("utf-8")
        log = self.h.log_messages()
        self.assert_no_forged_line(err, log)
        want = ('civis-agent: cannot upload "%s/%s": upload of %s: storage answered 403 '
                'AccessDenied: simulated failure' % (self.out, EVIL_SHOWN, EVIL_SHOWN))
        self.assertIn(want + "\n", err)
        self.assertIn(want, log)

    def test_forged_line_in_an_archive_member_is_escaped(self):
        os.mkdir(os.path.join(self.out, "d"))
        os.mkfifo(os.path.join(self.out, "d", EVIL))
        self.write("d/ok", b"ok")
        res = self.run_agent(["--output-dir", self.out, "--archive", "d"] + sh("true"))
        self.assertEqual(res.returncode, 0, res)
        err = res.stderr.decode("utf-8")
        log = self.h.log_messages()
        self.assert_no_forged_line(err, log)
        want = ("civis-agent: archive of %s/d: skipped %s: not a regular file or directory"
                % (self.out, EVIL_SHOWN))
        self.assertIn(want + "\n", err)
        self.assertIn(want, log)

    def test_forged_line_through_the_upload_command(self):
        self.h.set_faults([{"server": "storage", "action": "status", "status": 403}])
        p = self.write(EVIL, b"x")
        res = self.upload([p])
        self.assertEqual(res.returncode, 1, res)
        err = res.stderr.decode("utf-8")
        self.assert_no_forged_line(err, [])
        self.assertEqual(err, 'civis-agent: upload: "%s/%s": upload of %s: storage answered '
                         '403 AccessDenied: simulated failure\n'
                         % (self.out, EVIL_SHOWN, EVIL_SHOWN))

    def test_secret_in_a_file_name_is_refused(self):
        self.write("report-%s.csv" % SECRET, b"r")
        self.write("sub%s/x.csv" % SECRET, b"x")
        self.write("ok.csv", b"ok")
        res = self.run_agent(["--output-dir", self.out] + sh("true"),
                             extra_env={"DB_PASSWORD": SECRET})
        self.assertEqual(res.returncode, AGENT_EXIT_OUTPUT_FAILED, res)
        err = res.stderr.decode("utf-8")
        self.assertNotIn(SECRET, err)
        for m in self.h.log_messages():
            self.assertNotIn(SECRET, m)
        for f in self.h.files():
            self.assertNotIn(SECRET, f["name"])
        self.assertEqual(self.registered_names(), ["ok.csv"])
        for rel in ("report-[REDACTED].csv", "sub[REDACTED]/x.csv"):
            want = ("civis-agent: cannot upload %s/%s: its name holds a secret (shown masked "
                    "here): not uploaded; rename it" % (self.out, rel))
            self.assertIn(want + "\n", err)
            self.assertIn(want, self.h.log_messages())

    def test_secret_in_a_name_refused_by_the_upload_command(self):
        p = self.write("report-%s.csv" % SECRET, b"r")
        res = self.upload([p], env={"DB_PASSWORD": SECRET})
        self.assertEqual(res.returncode, 1, res)
        self.assertEqual(res.stdout, b"")
        self.assertEqual(res.stderr.decode("utf-8"),
                         "civis-agent: upload: %s/report-[REDACTED].csv: its name holds a "
                         "secret (shown masked here): not uploaded; rename it\n" % self.out)
        self.assertEqual(self.h.files(), [])
        # --name gives it a name of its own
        res = self.upload(["--name", "report.csv", p], env={"DB_PASSWORD": SECRET})
        self.assertEqual(res.returncode, 0, res)
        self.assertEqual([f["name"] for f in self.h.files()], ["report.csv"])


if __name__ == "__main__":
    unittest.main()
