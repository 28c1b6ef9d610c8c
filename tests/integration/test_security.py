"""Issue 12: no secret leaks and nothing outside its place is touched, under
the way real jobs write output and under a hostile command.

Each case is named after what it proves and asserts exactly what the API
received and what stderr said. Run with tests/integration/run.py."""
import json
import os
import random
import re
import shlex
import string
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
PY = sys.executable or "python3"

# A piece of a secret this long that is not in the ordinary text of a test
# is a leak (issue 12: no piece of any secret of 8 bytes or more).
PIECE = 4


def pieces(secret, ordinary, n=PIECE):
    """Every n-byte piece of secret that does not occur in the ordinary text."""
    return sorted({secret[i:i + n] for i in range(len(secret) - n + 1)} -
                  {ordinary[i:i + n] for i in range(len(ordinary) - n + 1)})


class SecurityTest(unittest.TestCase):
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

    def messages(self):
        return [l["message"] for l in sorted(self.sim.logs(), key=lambda l: l["createdAt"])]

    def command_messages(self):
        return [m for m in self.messages() if not m.startswith("civis-agent: ")]

    def python(self, args, code, env=None, timeout=60, argv=()):
        """Run the agent on `python3 -c code argv...` (stdout a pipe)."""
        return self.sim.run_agent(list(args) + ["--", PY, "-c", code] + list(argv),
                                  env=self.sim.env(env or {}), timeout=timeout)

    def assert_no_piece(self, secret, ordinary, msgs):
        bad = [(p, m) for p in pieces(secret, ordinary) for m in msgs if p in m]
        self.assertEqual(bad, [], "a piece of the secret %r reached the run log" % secret)

    # ------------------------------------------------------------ point 9: a stalled stdout

    def test_stalled_stdout_reader_does_not_freeze_the_agent(self):
        # stdout's reader sleeps 4 s: heartbeats go on every second (gap at
        # most 1.5 intervals), the command simply waits on its pipe, and the
        # copy that finally comes out is byte exact.
        n = 50000 if QUICK else 200000   # 0.3 / 1.3 MB: far more than the pipes hold
        stall = 8 if QUICK else 4        # valgrind takes seconds to start the agent
        cmd = "%s --heartbeat-interval 1s -- seq 1 %d | (sleep %d; cat)" % (
            shlex.quote(harness.agent_path()), n, stall)
        r = self.sim.run_command(["sh", "-c", cmd], env=self.sim.env(), timeout=90)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout, b"".join(b"%d\n" % i for i in range(1, n + 1)))
        self.assertEqual(r.stderr, b"")
        hb = self.sim.heartbeats()
        gaps = [b["mono"] - a["mono"] for a, b in zip(hb, hb[1:])]
        self.assertGreaterEqual(len(hb), 4, hb)
        self.assertLessEqual(max(gaps), 1.5, gaps)
        self.assertEqual(self.command_messages(), [str(i) for i in range(1, n + 1)])

    def test_stdout_shared_with_others_stays_blocking(self):
        # The agent's stdout pipe is shared with a sibling in the pipeline:
        # the sibling's file description must not turn non-blocking, during
        # the agent's run or after it.
        flags = (PY + " -c 'import fcntl, os; "
                 "print(\"nonblock=%d\" % bool(fcntl.fcntl(1, fcntl.F_GETFL) & os.O_NONBLOCK))'")
        with tempfile.TemporaryDirectory() as d:
            go = os.path.join(d, "go")
            os.mkfifo(go)
            # the sibling looks once the agent's copy has shown up (the test
            # read it), while the agent still runs, and again after it
            cmd = ("%s -- sh -c 'echo from-agent; sleep 3' & read x < %s; %s; wait; %s" %
                   (shlex.quote(harness.agent_path()), go, flags, flags))
            p = subprocess.Popen(["sh", "-c", cmd], env=self.sim.env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            try:
                first = p.stdout.readline()
                with open(go, "w") as fh:
                    fh.write("go\n")
                out, err = p.communicate(timeout=60)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        self.assertEqual((p.returncode, err), (0, b""))
        self.assertEqual(first + out, b"from-agent\nnonblock=0\nnonblock=0\n")

    # ------------------------------------------------------------ point 1: secrets and flushes

    SECRET = "Sup3rS3cretValue"

    def block_text(self, block, nblocks):
        """Ordinary lines, and the secret straddling every block boundary
        (it starts 7 bytes before it)."""
        text, n = "", 0
        for k in range(1, nblocks + 1):
            b = k * block
            while True:
                line = "line %05d of ordinary output, nothing to hide here\n" % n
                if len(text) + len(line) > b - 40:
                    break
                text += line
                n += 1
            text += "x" * (b - 7 - len(text) - 6) + "token=" + self.SECRET + " end\n"
        return text

    def check_block_buffered(self, block):
        # What Python's own stdout does into a pipe: one write of `block`
        # bytes whenever its buffer is full, here every 50 ms.
        text = self.block_text(block, 30)
        self.assertIn("token=" + self.SECRET, text)
        code = ("import os, sys, time\n"
                "data = open(sys.argv[1], 'rb').read()\n"
                "for i in range(0, len(data), %d):\n"
                "    os.write(1, data[i:i + %d]); time.sleep(0.05)\n" % (block, block))
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as fh:
            fh.write(text)
            fh.flush()
            r = self.python([], code, env={"DB_PASSWORD": self.SECRET}, argv=[fh.name])
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout, text.encode())
        msgs = self.command_messages()
        # every line whole, in one message, the secret masked: nothing else
        self.assertEqual(msgs, text.replace(self.SECRET, "[REDACTED]").splitlines())
        self.assert_no_piece(self.SECRET, text.replace(self.SECRET, ""), msgs)

    def test_block_buffered_writer_4096_keeps_lines_whole_and_secret_masked(self):
        self.check_block_buffered(4096)

    def test_block_buffered_writer_8192_keeps_lines_whole_and_secret_masked(self):
        self.check_block_buffered(8192)

    def test_pause_inside_a_secret_never_shows_its_start(self):
        # The writer stops in the middle of the secret for longer than the
        # flush interval: the flush may not wait for ever, but what it must
        # release of a possible secret goes out as [REDACTED].
        code = ("import os, time\n"
                "os.write(1, b'before Sup3rS3c'); time.sleep(1.2)\n"
                "os.write(1, b'retValue after\\n')\n")
        r = self.python(["--log-flush-interval", "300ms"], code, env={"DB_PASSWORD": self.SECRET})
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout, b"before Sup3rS3cretValue after\n")
        msgs = self.command_messages()
        self.assert_no_piece(self.SECRET, "before  after", msgs)
        self.assertGreaterEqual(len(msgs), 2, "the partial line went out during the pause")
        self.assertEqual(msgs[0], "before [REDACTED]")
        self.assertEqual("".join(msgs).replace("[REDACTED]", ""), "before  after")

    def assert_text_modulo_masks(self, got, want, secret, max_held=32):
        """got is want with each [REDACTED] standing for the secret or for at
        most max_held bytes a flush had to hold as a possible secret start."""
        pieces = got.split("[REDACTED]")
        self.assertTrue(want.startswith(pieces[0]), repr(pieces[0][:200]))
        pos = len(pieces[0])
        for k, piece in enumerate(pieces[1:], 1):
            if want.startswith(secret + piece, pos) and (piece or k < len(pieces) - 1 or
                                                         pos + len(secret) == len(want)):
                pos += len(secret) + len(piece)
                continue
            if k == len(pieces) - 1 and not piece:
                idx = len(want)
            else:
                idx = want.find(piece, pos, pos + max_held + len(piece))
            self.assertTrue(0 <= idx and idx - pos <= max_held,
                            "[REDACTED] #%d stands for more than a held start: %r" %
                            (k, want[pos:pos + 80]))
            pos = idx + len(piece)
        self.assertEqual(pos, len(want), "text lost at the end")

    def test_flood_with_short_flush_interval_never_shows_a_secret_piece(self):
        # A flood through the backlog with a 10 ms flush interval: no flush
        # may fall between backlog slices whose next bytes are on disk.
        if QUICK:
            self.skipTest("long under valgrind")
        # A writer that the machine leaves unscheduled for a flush interval
        # is idle for the agent too: its partial line goes out, and a held
        # 's' (the secret's possible start) is masked, by design. Raised
        # above the other work where it may (root, as CI runs), the writer
        # is not left that long, so only the agent's choice can split here.
        line = "flood line with some ordinary words and the value %s inside it\n"
        code = ("import os\n"
                "try:\n"
                "    os.nice(-10)\n"
                "except OSError:\n"
                "    pass\n"
                "buf = b''.join((%r %% (b'Sup3rS3cretValue' if i %% 7 == 0 else b'-' * 16))"
                " for i in range(200000))\n"
                "for i in range(0, len(buf), 65536):\n"
                "    os.write(1, buf[i:i + 65536])\n" % line.encode())
        r = self.python(["--log-flush-interval", "10ms"], code, env={"DB_PASSWORD": self.SECRET},
                        timeout=120)
        self.assertEqual(r.returncode, 0, r)
        msgs = self.command_messages()
        self.assert_no_piece(self.SECRET, line % ("-" * 16), msgs)
        want = "".join((line % (self.SECRET if i % 7 == 0 else "-" * 16))[:-1] for i in range(200000))
        # On a loaded machine the flood can pause for longer than 10 ms in
        # mid-line: that flush must mask bytes held as a possible start of a
        # secret (the API key's too), so a [REDACTED] stands for the secret
        # or for such held bytes; nothing else may be lost or added.
        self.assert_text_modulo_masks("".join(msgs), want, self.SECRET)

    def test_random_secrets_splits_and_pauses_never_show_a_secret_piece(self):
        # Random secrets (8..24 bytes of upper case and digits, which the
        # lower-case ordinary text never contains, so any 4-byte piece of one
        # in a message is a leak), written in random pieces with random
        # pauses around the 200 ms flush interval.
        seed = int(os.environ.get("CIVIS_TEST_SEED") or time.time())
        rnd = random.Random(seed)
        alpha = string.ascii_uppercase + string.digits
        for run in range(2 if QUICK else 3):
            secrets = ["".join(rnd.choice(alpha) for _ in range(rnd.randint(8, 24)))
                       for _ in range(rnd.randint(1, 4))]
            words, text = ["alpha", "beta", "gamma", "delta", "log", "x"], ""
            while len(text) < 3000:
                text += rnd.choice(words + secrets) + rnd.choice([" ", " ", " ", "\n"])
            text += "\n"
            plan, i = [], 0
            while i < len(text):
                j = min(len(text), i + rnd.choice([1, 3, 10, 50, 400]))
                plan.append((text[i:j], rnd.choice([0, 0, 0.01, 0.05, 0.25, 0.5])))
                i = j
            plan = plan[:40] + [(text[sum(len(c) for c, _ in plan[:40]):], 0)]
            code = ("import json, os, sys, time\n"
                    "for c, t in json.loads(os.environ['PLAN']):\n"
                    "    os.write(1, c.encode()); time.sleep(t)\n")
            env = {"RNDSEC_%d" % k: v for k, v in enumerate(secrets)}
            env["PLAN"] = json.dumps(plan)
            self.sim.reset()
            r = self.python(["--log-flush-interval", "200ms", "--redact", "RNDSEC_*"], code, env=env)
            what = "seed %d run %d secrets %r" % (seed, run, secrets)
            self.assertEqual(r.returncode, 0, what)
            self.assertEqual(r.stdout, text.encode(), what)
            msgs = [m.replace("[REDACTED]", "\x00") for m in self.command_messages()]
            for sec in secrets:
                leaks = [m for m in msgs for k in range(len(sec) - PIECE + 1) if sec[k:k + PIECE] in m]
                self.assertEqual(leaks, [], what)
            # Apart from the masks, the run log has the text as written: each
            # [REDACTED] stands for a secret or for bytes a flush had to hold
            # as a possible start of one (their encodings begin with lower
            # case letters too), nothing else is lost or added.
            pattern = ".*?".join(re.escape(p) for p in "".join(msgs).split("\x00"))
            self.assertIsNotNone(re.fullmatch(pattern, text.replace("\n", ""), re.S),
                                 what + ": " + repr(msgs))

    # ------------------------------------------------------------ point 6: the raw backlog

    def test_flood_backlog_capped_at_spool_max_and_nothing_dropped(self):
        # Raw output waits in the backlog file at most --spool-max (here
        # 1 MiB): at the cap reading pauses instead of dropping, which the
        # agent says once on stderr and in the run log, and every line of
        # the 30 MB flood still reaches the API once, in order.
        import util
        if QUICK:
            self.skipTest("long under valgrind")
        if util.missing():
            self.skipTest(util.missing())
        n = 300000
        r = self.sim.run_agent(["-v", "--spool-max", "1M", "--log-memory-max", "256M", "--",
                                util.flood_path(), "-n", str(n), "-s", "100"], timeout=180)
        self.assertEqual(r.returncode, 0, r)
        err = r.stderr.decode()
        note = ("civis-agent: the log backlog reached its cap of 1048576 bytes (--spool-max): the "
                "command's output is read only as fast as it is made into lines; nothing is dropped")
        self.assertEqual(err.count(note + "\n"), 1, err)
        check = util.LogCheck(self.sim.logs(), n)
        self.assertEqual((check.missing, check.dup_lines, check.ordered), ([], 0, True),
                         check.summary())
        self.assertIn(note, check.other)
        closing = [m for m in check.other if m.startswith("civis-agent: the log backlog cap")]
        self.assertEqual(len(closing), 1, check.other)
        self.assertRegex(closing[0], r"^civis-agent: the log backlog cap \(1048576 bytes\) paused "
                                     r"reading the command's output \d+ times, [0-9.]+ s in all; "
                                     r"no output was dropped$")
        self.assertEqual(util.parse_verbose(r.stderr)["dropped"], 0)
        # -v: the backlog's own line, after the delivery line, its cap as given
        m = re.search(r"^civis-agent: log backlog: peak (\d+) bytes of raw output \(cap 1048576\); "
                      r"reading paused (\d+) times by the cap, [0-9.]+ s in all; nothing dropped$",
                      err, re.M)
        self.assertIsNotNone(m, err)
        self.assertGreater(int(m.group(1)), 0)
        self.assertGreaterEqual(int(m.group(2)), 1)
        self.assertLess(err.index("civis-agent: delivery:"), m.start())


if __name__ == "__main__":
    unittest.main()
