#!/usr/bin/env python3
"""test_confinement.py: nothing outside --output-dir is uploaded, however the
tree changes under the agent (issue 12, point 8).

    python3 tests/integration/test_confinement.py [-v] [TestClass.test_name]

A sub-directory is swapped for a symlink to a directory outside while uploads
are queued: the agent opens every output beneath the output directory without
following a symlink at any step, so the outside file never reaches storage.
Each test asserts what the simulator stored (no byte of the outside file, the
exact names registered) and the exact line the user sees on stderr."""

import hashlib
import os
import shutil
import sys
import tarfile
import io
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "sim"))

from harness import SimHarness, agent_path  # noqa: E402

OUTSIDE_SECRET = b"OUTSIDE-the-output-directory-do-not-upload\n"


def sh(script):
    return ["--", "sh", "-c", script]


@unittest.skipUnless(os.access(agent_path(), os.X_OK), "build/civis-agent not built")
class TestConfinement(unittest.TestCase):
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
        self.tmp = tempfile.mkdtemp(prefix="civis-confine-")
        self.out = os.path.join(self.tmp, "out")
        self.outside = os.path.join(self.tmp, "outside")
        os.makedirs(os.path.join(self.out, "sub"))
        os.makedirs(self.outside)
        with open(os.path.join(self.outside, "x.txt"), "wb") as f:
            f.write(OUTSIDE_SECRET)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assert_outside_never_stored(self):
        want = hashlib.sha256(OUTSIDE_SECRET).hexdigest()
        for f in self.h.files():
            self.assertNotEqual(f.get("sha256"), want, "the outside file was uploaded: %r" % f)
            # The inside sub/x.txt may have gone before the swap (a loaded
            # machine can start its upload early): never with outside bytes.
            if f["name"] == "sub/x.txt":
                self.assertEqual(f.get("size"), 2 << 20, f)
            self.assertNotIn(OUTSIDE_SECRET.strip(), self.h.file_data(f["id"]) or b"")

    def registered_names(self):
        files = {f["id"]: f for f in self.h.files()}
        return [files[o["objectId"]]["name"] for o in self.h.outputs()]

    def test_swapped_while_queued_during_the_run(self):
        # Four uploads hold every slot (each storage answer takes 1.5 s; the
        # files are not small, so no more go at once); sub/x.txt is queued
        # behind them, then sub becomes a symlink to a
        # directory outside before its upload can start.
        self.h.set_config(storageDelayMs=1500)
        # (2 MiB each: not small, so only four go at once)
        script = ("for i in 1 2 3 4; do head -c 2097152 /dev/zero > '{o}'/b$i.txt; done; "
                  "sleep 0.5; head -c 2097152 /dev/zero > '{o}/sub/x.txt'; "
                  "mv '{o}/sub' '{o}/sub.old'; ln -s '{x}' '{o}/sub'; "
                  "sleep 2.5").format(o=self.out, x=self.outside)
        res = self.h.run_agent(["--output-dir", self.out] + sh(script), timeout=120)
        self.assertFalse(res.timed_out, res)
        err = res.stderr.decode("utf-8", "replace")
        self.assertEqual(res.returncode, 0, err)
        self.assert_outside_never_stored()
        self.assertEqual(sorted(self.registered_names()),
                         ["b1.txt", "b2.txt", "b3.txt", "b4.txt", "sub.old/x.txt"])
        self.assertIn("civis-agent: skipping %s/sub: points outside the output directory\n"
                      % self.out, err)

    def test_swapped_while_queued_after_exit(self):
        # The final scan queues b1..b4 and sub/x.txt; while the first four
        # are in flight the test swaps sub for the symlink.
        self.h.set_config(storageDelayMs=1500)
        for i in range(1, 5):
            with open(os.path.join(self.out, "b%d.txt" % i), "wb") as f:
                f.truncate(2 << 20)   # not small: only four go at once
        with open(os.path.join(self.out, "sub", "x.txt"), "wb") as f:
            f.truncate(2 << 20)
        swapped = threading.Event()

        def swap():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if len(self.h.requests(server="storage")) >= 1:
                    os.rename(os.path.join(self.out, "sub"), os.path.join(self.out, "sub.old"))
                    os.symlink(self.outside, os.path.join(self.out, "sub"))
                    swapped.set()
                    return
                time.sleep(0.02)

        t = threading.Thread(target=swap)
        t.start()
        res = self.h.run_agent(["--output-dir", self.out, "--", "true"], timeout=120)
        t.join()
        self.assertTrue(swapped.is_set(), "no storage request came to swap under")
        err = res.stderr.decode("utf-8", "replace")
        self.assertFalse(res.timed_out, res)
        self.assert_outside_never_stored()
        self.assertEqual(sorted(self.registered_names()),
                         ["b1.txt", "b2.txt", "b3.txt", "b4.txt"])
        self.assertIn("civis-agent: skipping %s/sub/x.txt: a directory on its path is a "
                      "symlink now (not followed)\n" % self.out, err)
        self.assertEqual(res.returncode, 0, err)

    def test_archive_stores_symlinks_as_symlinks(self):
        os.symlink(self.outside, os.path.join(self.out, "sub", "away"))
        os.symlink(os.path.join(self.outside, "x.txt"), os.path.join(self.out, "sub", "x"))
        with open(os.path.join(self.out, "sub", "in.txt"), "wb") as f:
            f.write(b"in")
        res = self.h.run_agent(["--output-dir", self.out, "--archive", "sub", "--", "true"],
                               timeout=120)
        err = res.stderr.decode("utf-8", "replace")
        self.assertEqual(res.returncode, 0, err)
        self.assert_outside_never_stored()
        (f,) = [f for f in self.h.files() if f["name"] == "sub.tar.gz"]
        data = self.h.file_data(f["id"])
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
            members = {m.name.split("/")[-1]: m for m in t.getmembers()}
            self.assertTrue(members["away"].issym())
            self.assertEqual(members["away"].linkname, self.outside)
            self.assertTrue(members["x"].issym())
            self.assertEqual(t.extractfile(members["in.txt"]).read(), b"in")
            for m in t.getmembers():
                if m.isfile():
                    self.assertNotEqual(t.extractfile(m).read(), OUTSIDE_SECRET)


if __name__ == "__main__":
    unittest.main()
