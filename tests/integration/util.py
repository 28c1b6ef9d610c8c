"""util.py: helpers shared by the integration tests (test_faults.py,
test_cancel.py): where the binaries are, why a suite must skip, the agent's
-v report parsed, the flood command's lines checked in the simulator, and
waiting with deadlines instead of sleeps."""

import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SIM_DIR = os.path.join(ROOT, "tests", "sim")
if SIM_DIR not in sys.path:
    sys.path.insert(0, SIM_DIR)

import harness  # noqa: E402


def flood_path():
    return os.environ.get("CIVIS_FLOOD") or os.path.join(ROOT, "build", "tools", "flood")


def quick():
    """CIVIS_TEST_QUICK=1 (valgrind runs): long scenarios skip themselves."""
    return os.environ.get("CIVIS_TEST_QUICK", "") not in ("", "0")


def missing(need_flood=True):
    """Why these tests cannot run here (a string), or None."""
    if not os.path.exists(harness.SIM_SCRIPT):
        return "simulator missing: %s" % harness.SIM_SCRIPT
    agent = harness.agent_path()
    if not os.access(agent, os.X_OK):
        return "agent not built: %s (run `make`)" % agent
    if need_flood and not os.access(flood_path(), os.X_OK):
        return "flood not built: %s (run `make tools`)" % flood_path()
    return None


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it is true; returns its value, raises AssertionError
    after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


# ------------------------------------------------------------------ the agent's -v report

_VERBOSE = {
    "rss_kb": re.compile(r"agent peak RSS \(VmHWM\): (\d+) kB"),
    # "N of M lines delivered" (older) or "N messages delivered (M lines from the command)"
    "delivery": re.compile(r"delivery: (\d+) (?:of (\d+) lines delivered|messages delivered "
                           r"\((\d+) lines from the command\)) in (\d+) requests; "
                           r"(\d+) possible duplicate tries; (\d+) dropped; (\d+) undelivered; "
                           r"log memory peak (\d+) bytes, spool (\d+) bytes"),
    "heartbeats": re.compile(r"heartbeats: (\d+) sent, (\d+) failed; cancel polls: (\d+), (\d+) failed"),
    # cut by --final-flush-timeout, or by the grace period after a SIGTERM/SIGINT
    "undelivered_msg": re.compile(r"civis-agent: (\d+) log lines could not be delivered to the "
                                  r"run log in time \((?:final flush timeout|stopped: grace "
                                  r"period) ([0-9.]+) s\)"),
}


def parse_verbose(stderr):
    """The figures of `civis-agent -v`'s closing report, as a dict (keys absent
    when the line is missing): rss_kb, delivered, lines, requests, ambiguous,
    dropped, undelivered, mem_peak, spool, hb_ok, hb_failed, polls_ok,
    polls_failed, undelivered_msg (count), flush_timeout_s."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    out = {}
    m = _VERBOSE["rss_kb"].search(text)
    if m:
        out["rss_kb"] = int(m.group(1))
    m = _VERBOSE["delivery"].search(text)
    if m:
        g = m.groups()
        vals = (g[0], g[1] if g[1] is not None else g[2]) + g[3:]
        keys = ("delivered", "lines", "requests", "ambiguous", "dropped", "undelivered",
                "mem_peak", "spool")
        out.update(zip(keys, (int(x) for x in vals)))
    m = _VERBOSE["heartbeats"].search(text)
    if m:
        out.update(zip(("hb_ok", "hb_failed", "polls_ok", "polls_failed"),
                       (int(x) for x in m.groups())))
    m = _VERBOSE["undelivered_msg"].search(text)
    if m:
        out["undelivered_msg"] = int(m.group(1))
        out["flush_timeout_s"] = float(m.group(2))
    return out


def read_timefile(path):
    """flood -t TIMEFILE: the command's own run time in seconds (first write to exit)."""
    with open(path) as fh:
        first, end = (int(x) for x in fh.read().split())
    return (end - first) / 1e9


# ------------------------------------------------------------------ flood lines in the run log

FLOOD_RE = re.compile(r"^(\d+) (\d+) x*$")


class LogCheck:
    """The flood lines found in the simulator's log records.

    counts[seq]: how many times line seq was stored; dup_lines: extra copies;
    missing: seqs never stored; ordered: sorting by createdAt gives the seqs
    in order (over the first copy of each); other: records that are not flood
    lines (the agent's own notes); by_request: requestSeq -> list of seqs."""

    def __init__(self, logs, expected, ignore_requests=()):
        ignore = set(ignore_requests)
        self.expected = expected
        self.counts = [0] * expected
        self.other = []
        self.by_request = {}
        self.bad = []
        firsts = []
        for r in logs:
            m = FLOOD_RE.match(r["message"])
            if not m:
                self.other.append(r["message"])
                continue
            seq = int(m.group(1))
            self.by_request.setdefault(r["requestSeq"], []).append(seq)
            if r["requestSeq"] in ignore:
                continue
            if seq >= expected:
                self.bad.append(r["message"][:80])
                continue
            self.counts[seq] += 1
            if self.counts[seq] == 1:
                firsts.append((r["createdAt"], seq))
        self.missing = [i for i, c in enumerate(self.counts) if c == 0]
        self.dup_lines = sum(c - 1 for c in self.counts if c > 1)
        firsts.sort()
        seqs = [s for _, s in firsts]
        self.ordered = all(seqs[i] < seqs[i + 1] for i in range(len(seqs) - 1))
        # createdAt strictly increasing along seq as well (no ties)
        created = [c for c, _ in firsts]
        self.strict = all(created[i] < created[i + 1] for i in range(len(created) - 1))
        self.max_batch = max((len(v) for v in self.by_request.values()), default=0)

    def summary(self):
        return ("%d expected, %d missing (first %s), %d duplicate copies, ordered=%s, "
                "strict=%s, %d other records, %d bad"
                % (self.expected, len(self.missing), self.missing[:5], self.dup_lines,
                   self.ordered, self.strict, len(self.other), len(self.bad)))


def proc_running(pid):
    """pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return st != "Z"


# ------------------------------------------------------------------ a running agent

class RunningAgent:
    """The agent started in the background (its own process group), for tests
    that act during the run (signals, cancel). stdout/stderr go to files."""

    def __init__(self, h, args, tmpdir, extra_env=None, agent=None):
        self.out_path = os.path.join(tmpdir, "agent.out")
        self.err_path = os.path.join(tmpdir, "agent.err")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.argv = [agent or harness.agent_path()] + list(args)
        self.t0 = time.monotonic()
        self.proc = harness._spawn(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                   stderr=self._err, env=h.env(extra_env))
        self.end = None

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """The exit status (negative: killed by that signal); kills the group and
        raises AssertionError when it does not end in time."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            harness._kill_group(self.proc, grace=1.0)
            raise AssertionError("agent did not exit within %.1f s: %s"
                                 % (timeout, self.stderr()[-2000:]))
        self.end = time.monotonic()
        self.close()
        return rc

    @property
    def wall(self):
        return (self.end or time.monotonic()) - self.t0

    def close(self):
        for f in (self._out, self._err):
            if not f.closed:
                f.close()
        if self.proc.poll() is None:
            harness._kill_group(self.proc, grace=1.0)
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # leftovers of its group
            except (ProcessLookupError, PermissionError):
                pass

    def stdout(self):
        with open(self.out_path, "rb") as fh:
            return fh.read()

    def stderr(self):
        with open(self.err_path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")


def log_path(h):
    return "/" + h.run_path("/logs")


def hb_path(h):
    return "/" + h.run_path("/heartbeats")


def mount_tmpfs(path, options):
    """Mount a tmpfs with these mount options on path (tests of full and
    read-only disks); the reason it cannot, or None."""
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        return "cannot mount a tmpfs: %s" % r.stdout.decode("utf-8", "replace").strip()
    return None
