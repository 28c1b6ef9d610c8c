#!/usr/bin/env python3
"""test_readonly.py: no writable directory at all (issue 15 point 6).

The spool directory and $TMPDIR are one tmpfs mounted read-only (root only:
`mount -t tmpfs -o size=1m,ro`), --log-memory-max is 1M and the simulator is
up the whole time; the command prints 30,000 numbered lines of 100 bytes as
fast as it can (about 3 MB: the memory fills several times over). The log
queue then works in memory only and the command waits on its pipe while it
is full, as it would under `cat`. What must hold:

  - exit status 0;
  - every line arrives exactly once, in order (createdAt strictly increasing
    along the line numbers);
  - the tee copy on stdout is byte-exact;
  - exactly one agent note says the run log is kept in memory only (stderr,
    and the run log), and no line was dropped or failed to be queued.

    python3 tests/integration/test_readonly.py [-v]"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import util  # noqa: E402
from harness import SimHarness  # noqa: E402

LINES = 30000
LINE_BYTES = 100


class ReadOnly(unittest.TestCase):
    FAULTS = None

    @classmethod
    def setUpClass(cls):
        why = util.missing()
        if why:
            raise unittest.SkipTest(why)
        if util.quick():
            # valgrind keeps its own files in $TMPDIR, which this test makes
            # read-only; the plain and sanitizer runs cover it
            raise unittest.SkipTest("under valgrind: it needs a writable TMPDIR of its own")
        cls.tmp = tempfile.mkdtemp(prefix="civis-readonly-")
        cls.ro = os.path.join(cls.tmp, "ro")
        os.mkdir(cls.ro)
        why = util.mount_tmpfs(cls.ro, "size=1m,ro")
        if why:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise unittest.SkipTest(why)
        try:
            cls._run()
        finally:
            subprocess.run(["umount", cls.ro])
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def _run(cls):
        timefile = os.path.join(cls.tmp, "flood.time")
        with SimHarness() as h:
            if cls.FAULTS:
                h.set_faults([dict(f, path=util.log_path(h)) for f in cls.FAULTS])
            res = h.run_agent(["--spool-dir", cls.ro, "--log-memory-max", "1M", "--",
                               util.flood_path(), "-n", str(LINES), "-s", str(LINE_BYTES),
                               "-t", timefile],
                              timeout=240.0, extra_env={"TMPDIR": cls.ro})
            cls.cmd_s = util.read_timefile(timefile) if os.path.exists(timefile) else None
            cls.rc = res.returncode
            cls.timed_out = getattr(res, "timed_out", False)
            cls.stdout = res.stdout
            cls.stderr = res.stderr.decode("utf-8", "replace")
            cls.logs = h.logs()
        cls.chk = util.LogCheck(cls.logs, LINES)

    def test_exit_status(self):
        self.assertFalse(self.timed_out, self.stderr[-2000:])
        self.assertEqual(self.rc, 0, self.stderr[-2000:])

    def test_every_line_once_in_order(self):
        self.assertEqual(self.chk.missing, [], self.chk.summary())
        self.assertEqual(self.chk.dup_lines, 0, self.chk.summary())
        self.assertEqual(self.chk.bad, [], self.chk.summary())
        self.assertTrue(self.chk.ordered, self.chk.summary())
        self.assertTrue(self.chk.strict, self.chk.summary())

    def test_tee_byte_exact(self):
        # each line carries its write time: the copy must be exactly the
        # lines the run log got, in line order, each LINE_BYTES long
        by_seq = {}
        for r in self.logs:
            m = util.FLOOD_RE.match(r["message"])
            if m:
                by_seq[int(m.group(1))] = r["message"]
        want = b"".join(by_seq[i].encode() + b"\n" for i in sorted(by_seq))
        self.assertEqual(len(self.stdout), LINES * LINE_BYTES)
        self.assertTrue(self.stdout == want, "the tee copy differs from the run log's lines")

    def test_one_memory_only_note(self):
        notes = [ln for ln in self.stderr.splitlines() if ln.startswith("civis-agent:")]
        mem = [ln for ln in notes if "memory only" in ln]
        self.assertEqual(len(mem), 1, "notes: %r" % notes)
        self.assertIn(self.ro, mem[0])
        self.assertIn("--log-memory-max 1 MiB", mem[0])
        # the run log has it too, once
        logged = [r["message"] for r in self.logs if "memory only" in r["message"]]
        self.assertEqual(len(logged), 1, logged)
        # no per-chunk notes, nothing dropped
        self.assertFalse([ln for ln in notes if "could not queue" in ln or "dropped" in ln],
                         "notes: %r" % notes)
        # one note about the directory, as the image test wants; the job
        # API's CIVIS_OUTPUT file (agent/jobwork.c) has its own note, not
        # the log's
        about = [ln for ln in notes if (self.ro in ln or "spool" in ln or "backlog" in ln)
                 and not ln.startswith("civis-agent: CIVIS_OUTPUT ")]
        self.assertEqual(about, mem, "notes: %r" % notes)



class ReadOnlyOutage(ReadOnly):
    """The same with the log API answering 503 for the first 3 s: the memory
    fills, the command waits on its pipe (its own run time shows it), and
    still nothing is lost."""
    FAULTS = [{"action": "status", "status": 503, "start": 0, "duration": 3}]

    def test_command_waited(self):
        self.assertIsNotNone(self.cmd_s, self.stderr[-2000:])
        self.assertGreater(self.cmd_s, 1.5, "the command did not wait for room: %.2f s"
                           % self.cmd_s)


if __name__ == "__main__":
    unittest.main()
