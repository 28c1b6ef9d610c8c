#!/usr/bin/env python3
"""test_spool_full.py: a full spool disk (issue 12 point 12).

The spool directory is an 8 MiB tmpfs (root only: `mount -t tmpfs -o size=8m`),
the API answers 503 to log posts for 15 s, and the command prints 600,000
numbered lines of 100 bytes (about 60 MB: the 4 MiB of memory and the 8 MiB
disk both fill up). What the run log must show afterwards, exactly:

  - the command's exit status is the agent's, and stderr says how many lines
    were dropped;
  - sorted by createdAt, the lines kept are in line-number order (strictly
    increasing createdAt along the line numbers);
  - the lines missing form contiguous stretches, and each stretch has a note
    "civis-agent: N lines dropped here: spool full" whose createdAt lies
    between the last line kept before it and the first kept after it; the
    notes' N add up to the lines missing (give or take the agent's own
    notes, which can be dropped in a stretch too);
  - the first line (the start of the output) and the last (where a
    traceback would be) are kept.

Skipped unless root (mount) and the flood tool is built (`make tools`).

The log queue's part (lib/src/logqueue*.c) is in place: it drops the oldest
queued chunks as one stretch and leaves the note. On the 21:57 run of branch
`redact` the order and note checks still failed because of the log stream's
backlog (agent/logstream.c, not part of this branch): the backlog file fills
the same 8 MiB, its write fails, and the read is then processed at once,
before the older backlog bytes (lines out of createdAt order, and lines of
two reads glued into one message).

    python3 tests/integration/test_spool_full.py [-v]"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import util  # noqa: E402
from harness import SimHarness  # noqa: E402

LINES = 600000
LINE_BYTES = 100
NOTE_RE = re.compile(r"^civis-agent: (\d+) lines dropped here: spool full$")
DROPPED_RE = re.compile(r"civis-agent: (\d+) log lines were dropped")


@unittest.skipIf(util.quick(), "CIVIS_TEST_QUICK: the flood takes a while")
class SpoolFull(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        why = util.missing()
        if why:
            raise unittest.SkipTest(why)
        cls.tmp = tempfile.mkdtemp(prefix="civis-spoolfull-")
        cls.spool = os.path.join(cls.tmp, "spool")
        os.mkdir(cls.spool)
        why = util.mount_tmpfs(cls.spool, "size=8m,mode=0700")
        if why:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise unittest.SkipTest(why)
        try:
            cls._run()
        finally:
            subprocess.run(["umount", cls.spool])
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def _run(cls):
        with SimHarness() as h:
            h.set_faults([{"action": "status", "status": 503, "path": util.log_path(h),
                           "start": 1, "duration": 15}])
            res = h.run_agent(["-v", "--spool-dir", cls.spool, "--",
                               util.flood_path(), "-n", str(LINES), "-s", str(LINE_BYTES)],
                              timeout=300.0)
            cls.rc = res.returncode
            cls.stderr = res.stderr.decode("utf-8", "replace")
            logs = h.logs()
        cls.chk = util.LogCheck(logs, LINES)
        # (createdAt, kind, value): kind 0 = flood line seq, 1 = note N
        cls.events = []
        cls.notes = []
        for r in logs:
            m = util.FLOOD_RE.match(r["message"])
            if m:
                cls.events.append((r["createdAt"], 0, int(m.group(1))))
                continue
            m = NOTE_RE.match(r["message"])
            if m:
                cls.events.append((r["createdAt"], 1, int(m.group(1))))
                cls.notes.append((r["createdAt"], int(m.group(1))))
        cls.events.sort()

    def test_exit_status_and_stderr_count(self):
        self.assertEqual(self.rc, 0, self.stderr[-2000:])
        said = sum(int(m.group(1)) for m in DROPPED_RE.finditer(self.stderr))
        self.assertGreater(said, 0, "stderr did not say lines were dropped: %s"
                           % self.stderr[-2000:])
        self.assertGreaterEqual(said, len(self.chk.missing))

    def test_kept_lines_in_order(self):
        self.assertTrue(self.chk.missing, "nothing was dropped: the disk did not fill")
        self.assertTrue(self.chk.ordered, self.chk.summary())
        self.assertTrue(self.chk.strict, self.chk.summary())
        self.assertEqual(self.chk.dup_lines, 0, self.chk.summary())

    def test_start_and_end_kept(self):
        self.assertEqual(self.chk.counts[0], 1, "the first line was dropped")
        self.assertEqual(self.chk.counts[LINES - 1], 1, "the last line was dropped")

    def test_each_stretch_has_its_note(self):
        # walk in createdAt order: between two kept lines a and b with
        # b > a + 1, the notes seen must add up to b - a - 1 (the stretch)
        prev, pending, stretches = None, 0, 0
        for _, kind, v in self.events:
            if kind == 1:
                self.assertIsNotNone(prev, "a note before the first line")
                pending += v
                continue
            if prev is not None and v > prev + 1:
                stretches += 1
                gap = v - prev - 1
                self.assertGreaterEqual(pending, gap, "lines %d..%d dropped, notes say %d"
                                        % (prev + 1, v - 1, pending))
                self.assertLessEqual(pending - gap, 5, "notes say %d for %d lines"
                                     % (pending, gap))
            else:
                self.assertEqual(pending, 0, "a note where nothing was dropped (after %s)" % prev)
            pending = 0
            prev = v
        self.assertEqual(pending, 0, "a note after the last line")
        self.assertGreater(stretches, 0)
        # A stretch whose note was already sent when more of it was dropped
        # gets a second note right after the first (a slow, e.g. sanitizer,
        # build sends more often): they still add up to the stretch, checked
        # above; this only bounds the splitting.
        self.assertLessEqual(len(self.notes), 3 * stretches + 5, "notes: %s" % self.notes[:10])


if __name__ == "__main__":
    unittest.main()
