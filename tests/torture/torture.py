#!/usr/bin/env python3
"""torture.py: allocation-failure torture, as curl's `runtests -t`.

For each scenario: one run counts the allocations of the library's and the
agent's own objects (CIVIS_COUNT_ALLOCS), then the scenario is run again with
the Nth allocation failing (CIVIS_FAIL_ALLOC_AT=N), N = 1 .. count (evenly
sampled past --max-points or the time budget, which the output says), under
ASan+UBSan+LeakSanitizer and a timeout. Every run is classified:

  ok         a clean end (a cmocka test may fail: that is the expected effect
             of a failed allocation; what matters is how the program ends)
  crash      killed by a signal, a sanitizer memory error, a UBSan report,
             a cmocka "Test failed with exception", an unexpected exit status
  hang       the timeout expired
  leak       LeakSanitizer found a leak (driver and agent scenarios)
  wrong      (driver) a call succeeded but its result is wrong: a failed
             allocation lost or corrupted data behind a success
  status     (agent) the command ran but the agent's exit status is not 7
  output     (agent) the command's output was not copied through
  refused    (agent, not a failure) the agent stopped with a clean message
             before starting the command (e.g. options could not be parsed)

Scenarios:
  driver:<name>  build/torture/tests/torture_driver <name> (tests/torture/
                 driver.c): the pure modules' paths with every call checked and
                 everything freed on any failure, so a leak is the library's.
  unit:<name>    build/torture/tests/test_<name>, the cmocka unit programs, with
                 LeakSanitizer off: cmocka leaves a failed test by longjmp,
                 abandoning whatever the test had allocated, so leaks there say
                 nothing about the library; crashes, memory errors, UB and
                 hangs do.
  agent          a short `civis-agent -- sh -c 'echo a; echo b >&2; exit 7'`
                 against the simulator (tests/sim/harness.py)
  agent-outputs  the same with --output-dir holding two files
  agent-sticky   the agent with every allocation from the Nth on failing
  agent-outputs-sticky, agent-outputs-gzip (--gzip --archive-dirs --redact-tee):
                 with --all or --only (slower: ~4 minutes together)
  agent-faults   the agent run with 503s on the log POST, deep JSON on the
                 cancel poll and 500s on heartbeats (retry and error paths)
  agent-upload   `civis-agent upload FILE`: 0 with "<id>\tf.txt", or 1/2 with
                 one clean line

Exit status: 0 if no crash, hang, leak, wrong, status or output failure; 1 otherwise;
2 for a usage or setup error. Logs of failures go to BUILD/logs/."""

import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))

FAILURES = ("crash", "hang", "leak", "wrong", "status", "output")
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:allow_user_segv_handler=0:handle_abort=1:"
                    "print_summary=1:symbolize=1:abort_on_error=0",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "LSAN_OPTIONS": "max_leaks=8",
}
# Extra environment per unit program (keep each run short).
UNIT_ENV = {"logqueue": {"CIVIS_LOGQ_SOAK_MB": "1"}}
DRIVER_SCENARIOS = ("linebuf", "logbatch", "logqueue", "redact", "client", "options")
RUN = "/scripts/containers/11/runs/22"
# The agent's scenarios: keyword arguments of Torture.agent.
AGENT_SCENARIOS = (
    ("agent", {}),
    ("agent-outputs", {"outputs": True}),
    ("agent-sticky", {"sticky": True}),
    # With --all only (about 4 minutes more: a failed upload waits for its
    # retries up to the final flush timeout).
    ("agent-outputs-sticky", {"outputs": True, "sticky": True, "extra": True}),
    # gzip and tar.gz staging, masking of the copy on our stdout/stderr
    ("agent-outputs-gzip", {"outputs": True, "extra": True,
                            "args": ["--gzip", "--archive-dirs", "--redact-tee"]}),
    # Retry and parse-error paths: every other log POST gets a 503, every
    # other cancel poll a JSON nested too deep, every third heartbeat a 500.
    ("agent-faults", {"max_points": 100,
                      "args": ["--cancel-poll-interval", "100ms", "--heartbeat-interval", "150ms",
                               "--log-flush-interval", "100ms"],
                      "cmd": ["sh", "-c", "echo a; for i in 1 2 3 4 5 6; do sleep 0.1; "
                              "echo x$i >&2; done; echo b >&2; exit 7"],
                      "faults": [
                          {"method": "POST", "path": RUN + "/logs", "action": "status",
                           "status": 503, "every": 2, "retryAfter": "0"},
                          {"method": "GET", "path": RUN, "action": "hostile",
                           "kind": "deep_json", "depth": 2000, "every": 2},
                          {"method": "POST", "path": RUN + "/heartbeats", "action": "status",
                           "status": 500, "every": 3}]}),
    ("agent-upload", {"upload": True}),
)
AGENT_CMD = ["sh", "-c", "echo a; echo b >&2; exit 7"]
FRAME_RE = re.compile(r"#\d+ 0x[0-9a-f]+ in (\S+) (\S*(?:lib/src|agent|tests)/[^\s:]+:\d+)")


def log(msg):
    print(msg, flush=True)


class Result:
    def __init__(self, n, kind, detail="", text="", injected=None):
        self.n, self.kind, self.detail, self.text, self.injected = n, kind, detail, text, injected
        self.allocs = None


def read_count(path):
    """(allocs, injected) from a CIVIS_COUNT_ALLOCS file, or (None, None)."""
    try:
        with open(path) as fh:
            kv = dict(x.split("=", 1) for x in fh.read().split())
        return int(kv["allocs"]), int(kv["injected"])
    except (OSError, ValueError, KeyError):
        return None, None


def signature(text):
    """Where a sanitizer report points in our code: the first frame in
    lib/src, agent/ or tests/, else the report's first line."""
    for m in FRAME_RE.finditer(text):
        if "torture_alloc" in m.group(2):
            continue
        return "%s %s" % (m.group(1), m.group(2).split("/main/")[-1])
    for ln in text.splitlines():
        if "ERROR:" in ln or "runtime error" in ln or "exception" in ln:
            return ln.strip()[:160]
    return ""


def sanitizer_kind(text):
    if "runtime error:" in text:
        return "crash", "UBSan"
    if re.search(r"ERROR: AddressSanitizer", text):
        m = re.search(r"ERROR: AddressSanitizer: (\S+)", text)
        return "crash", "ASan " + (m.group(1) if m else "")
    if "Test failed with exception" in text:
        return "crash", "cmocka caught a signal"
    if "ERROR: LeakSanitizer" in text:
        return "leak", "LeakSanitizer"
    return None, None


def sample(count, cap):
    """1..count, or cap points spread evenly over it (1 and count included)."""
    if count <= cap:
        return list(range(1, count + 1))
    pts = {1 + (i * (count - 1)) // (cap - 1) for i in range(cap)}
    return sorted(pts)


class Torture:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.logdir = os.path.join(self.build, "logs")
        shutil.rmtree(self.logdir, ignore_errors=True)
        os.makedirs(self.logdir)
        self.tmp = tempfile.mkdtemp(prefix="civis-torture-")
        self.summary = []
        self.lock = threading.Lock()

    def env(self, extra=None, base=None):
        e = dict(os.environ if base is None else base)
        e.update(SAN_ENV)
        for k in ("CIVIS_FAIL_ALLOC_AT", "CIVIS_FAIL_ALLOC_STICKY", "CIVIS_COUNT_ALLOCS"):
            e.pop(k, None)
        e.update(extra or {})
        return e

    def save(self, scen, r):
        name = "%s-%d.txt" % (scen.replace(":", "_"), r.n)
        with open(os.path.join(self.logdir, name), "w") as fh:
            fh.write("N=%d kind=%s %s\n\n%s" % (r.n, r.kind, r.detail, r.text))
        return name

    # ------------------------------------------------------------ programs

    def run_prog(self, argv, n, extra, cntfile, driver):
        """One run of a unit program (driver=False) or of the driver."""
        env = self.env(dict(extra, CIVIS_COUNT_ALLOCS=cntfile, TMPDIR=self.tmp))
        if not driver:
            env["ASAN_OPTIONS"] += ":detect_leaks=0"
        if n:
            env["CIVIS_FAIL_ALLOC_AT"] = str(n)
        # Own session, output to a file: a test's forked helper (a scripted
        # server left waiting when its test failed) must not hold a pipe
        # open past the program's end; the group is killed afterwards.
        with tempfile.TemporaryFile(dir=self.tmp) as out:
            p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, cwd=self.tmp,
                                 start_new_session=True)
            hung = False
            try:
                p.wait(self.args.timeout)
            except subprocess.TimeoutExpired:
                hung = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
            out.seek(0)
            text = out.read().decode("utf-8", "replace")
        if hung:
            return Result(n, "hang", "no end in %ss" % self.args.timeout, text)
        allocs, injected = read_count(cntfile)
        try:
            os.unlink(cntfile)
        except OSError:
            pass
        kind, detail = sanitizer_kind(text)
        if kind is None and p.returncode < 0:
            kind, detail = "crash", "signal %d" % -p.returncode
        if kind is None and driver:
            if p.returncode == 3:
                kind, detail = "wrong", text.strip().splitlines()[-1] if text.strip() else ""
            elif p.returncode not in (0, 1):
                kind, detail = "crash", "exit status %d" % p.returncode
            elif p.returncode == 1 and not n:
                kind, detail = "wrong", "fails without injection: " + text.strip()[:200]
            else:
                kind, detail = "ok", "clean error" if p.returncode else ""
        if kind is None:
            failed = "[  FAILED  ]" in text or "[  ERROR   ]" in text
            kind, detail = "ok", "tests failed" if failed else ""
        r = Result(n, kind, detail, text, injected)
        r.allocs = allocs
        return r

    def program(self, scen, argv, extra, driver):
        if not os.access(argv[0], os.X_OK):
            log("== %s: %s not built; skipped" % (scen, argv[0]))
            self.summary.append((scen, 0, 0, {}, "not built"))
            return
        tag = scen.replace(":", "-")
        t0 = time.monotonic()
        base = self.run_prog(argv, 0, extra, os.path.join(self.tmp, "count-" + tag), driver)
        dt = time.monotonic() - t0
        allocs = base.allocs
        if base.kind != "ok" or base.detail or allocs is None:
            log("== %s: the run without injection does not pass (%s %s); counted as a failure"
                % (scen, base.kind, base.detail or "no count"))
            self.save(scen, base)
            self.summary.append((scen, 0, 0, {"crash": 1}, "baseline failed"))
            return
        if allocs == 0:
            log("== %s: no allocation counted; nothing to torture" % scen)
            self.summary.append((scen, 0, 0, {}, "none"))
            return
        self.points(scen, allocs, dt, lambda n: self.run_prog(
            argv, n, extra, os.path.join(self.tmp, "c-%s-%d" % (tag, n)), driver))

    def unit(self, name):
        self.program("unit:" + name, [os.path.join(self.build, "tests", "test_" + name)],
                     UNIT_ENV.get(name, {}), False)

    def driver(self, name):
        self.program("driver:" + name, [os.path.join(self.build, "tests", "torture_driver"), name],
                     {}, True)

    # ------------------------------------------------------------ sweeping

    def points(self, scen, allocs, dt, fn, cap=None):
        cap = cap or self.args.max_points
        budget_cap = max(150, int(self.args.budget * self.args.jobs / max(dt, 0.01)))
        use = min(cap, budget_cap)
        pts = sample(allocs, use)
        how = "all" if len(pts) == allocs else \
            "sampled evenly (cap %d%s)" % (use, ", time budget %ss" % self.args.budget
                                            if budget_cap < cap else "")
        log("== %s: %d allocations counted; torturing %d points, %s"
            % (scen, allocs, len(pts), how))
        results = self.sweep(scen, pts, fn)
        self.report(scen, allocs, len(pts), results, how)

    def sweep(self, scen, pts, fn):
        results = []
        with concurrent.futures.ThreadPoolExecutor(self.args.jobs) as ex:
            for r in ex.map(fn, pts):
                results.append(r)
                if self.args.verbose and r.kind != "ok":
                    log("   N=%d %s %s" % (r.n, r.kind, r.detail))
        return results

    def report(self, scen, allocs, npts, results, how):
        kinds = {}
        sigs = {}
        for r in results:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
            if r.kind in FAILURES:
                key = (r.kind, signature(r.text) or r.detail)
                if key not in sigs:
                    sigs[key] = (r, self.save(scen, r), 0)
                first, logname, c = sigs[key]
                sigs[key] = (first, logname, c + 1)
        nfail = sum(kinds.get(k, 0) for k in FAILURES)
        log("   %s: %d points, %d failures; %s" % (
            scen, npts, nfail, ", ".join("%s %d" % kv for kv in sorted(kinds.items()))))
        for (kind, sig), (first, logname, c) in sorted(sigs.items(), key=lambda x: x[1][0].n):
            tag = "FAIL" if kind in FAILURES else "info"
            log("   %s %s x%d, first at N=%d: %s (log: %s)" % (
                tag, kind, c, first.n, sig or first.detail, os.path.join("logs", logname)))
        self.summary.append((scen, allocs, npts, kinds, how))

    # ------------------------------------------------------------ the agent

    def agent(self, name, outputs=False, sticky=False, faults=None, args=None, upload=False,
              cmd=None, max_points=None, extra=False):
        from harness import SimHarness
        agent = os.path.join(self.build, "civis-agent")
        if not os.access(agent, os.X_OK):
            log("== %s: %s not built; skipped" % (name, agent))
            self.summary.append((name, 0, 0, {}, "not built"))
            return
        with SimHarness(job_id=11, run_id=22) as h:
            if faults:
                h.set_faults(faults)

            def run(n):
                cnt = os.path.join(self.tmp, "a-%s-%d" % (name, n))
                extra = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                         "HOME": self.tmp, "TMPDIR": self.tmp,
                         "DEPLOY_TOKEN": "torture-secret-0123456789",
                         "CIVIS_COUNT_ALLOCS": cnt}
                if n:
                    extra["CIVIS_FAIL_ALLOC_AT"] = str(n)
                    if sticky:
                        extra["CIVIS_FAIL_ALLOC_STICKY"] = "1"
                env = self.env(h.env(extra, base={}), base={})
                argv = ["--final-flush-timeout", "3s", "--heartbeat-interval", "1s"]
                argv += args or []
                outdir = None
                if outputs:
                    outdir = os.path.join(self.tmp, "out-%s-%d" % (name, n))
                    os.makedirs(os.path.join(outdir, "sub"), exist_ok=True)
                    with open(os.path.join(outdir, "one.txt"), "w") as fh:
                        fh.write("one\n")
                    with open(os.path.join(outdir, "sub", "two.txt"), "w") as fh:
                        fh.write("two\n" * 100)
                    argv += ["--output-dir", outdir]
                if upload:
                    outdir = os.path.join(self.tmp, "up-%s-%d" % (name, n))
                    os.makedirs(outdir, exist_ok=True)
                    with open(os.path.join(outdir, "f.txt"), "w") as fh:
                        fh.write("upload\n")
                    argv = ["upload", os.path.join(outdir, "f.txt")]
                else:
                    argv += ["--"] + (cmd or AGENT_CMD)
                res = h.run_agent(argv, env=env, agent=agent, timeout=self.args.timeout)
                if outdir:
                    shutil.rmtree(outdir, ignore_errors=True)
                allocs, injected = read_count(cnt)
                try:
                    os.unlink(cnt)
                except OSError:
                    pass
                text = "rc=%r wall=%.2fs\n--- stdout\n%s\n--- stderr\n%s" % (
                    res.returncode, res.wall, res.stdout.decode("utf-8", "replace"),
                    res.stderr.decode("utf-8", "replace"))
                r = (self.classify_upload if upload else self.classify_agent)(n, res, text)
                r.injected = injected
                r.allocs = allocs
                return r

            t0 = time.monotonic()
            base = run(0)
            dt = time.monotonic() - t0
            if base.kind != "ok" or base.allocs is None:
                log("== %s: the run without injection fails (%s %s); skipped"
                    % (name, base.kind, base.detail))
                self.save(name, base)
                self.summary.append((name, 0, 0, {base.kind: 1}, "baseline failed"))
                return
            st = h.state()
            applied = sum(f.get("applied", 0) for f in st.get("faults", []))
            log("== %s: the run without injection made %d API requests (%d faulted)"
                % (name, st.get("requests", 0), applied))
            # The count varies a little with timing (heartbeats, retries):
            # go on past it until a run completes with nothing injected.
            allocs = base.allocs
            cap = max_points or (self.args.outputs_max_points if outputs
                                 else self.args.agent_max_points)
            budget_cap = max(50, int(self.args.agent_budget * self.args.jobs / max(dt, 0.01)))
            pts = sample(allocs, min(cap, budget_cap, allocs))
            how = "all" if len(pts) == allocs else "sampled evenly (cap %d%s)" % (
                min(cap, budget_cap), ", time budget %ss" % self.args.agent_budget
                if budget_cap < cap else "")
            log("== %s: %d allocations counted (%.2fs a run); torturing %d points, %s%s"
                % (name, allocs, dt, len(pts), how,
                   ", every allocation from N on failing" if sticky else ""))
            results = self.sweep(name, pts, run)
            n = pts[-1]
            extra_runs = 0
            while len(pts) == allocs and extra_runs < 200:
                if any(r.injected == 0 for r in results[-self.args.jobs:]):
                    break
                batch = list(range(n + 1, n + 1 + self.args.jobs))
                results += self.sweep(name, batch, run)
                n = batch[-1]
                extra_runs += len(batch)
            clean = [r.n for r in results if r.injected == 0]
            if len(pts) == allocs:
                log("   %s: a run completed with no failure injected at N=%s" % (
                    name, clean[0] if clean else "(none within %d)" % n))
            self.report(name, allocs, len(results), results, how)

    def classify_upload(self, n, res, text):
        """`civis-agent upload`: 0 with "<id>\tf.txt", or 1/2 with one clean line."""
        kind, detail = sanitizer_kind(text)
        if kind:
            return Result(n, kind, detail, text)
        if res.timed_out:
            return Result(n, "hang", "killed after %ss" % self.args.timeout, text)
        if res.returncode < 0:
            return Result(n, "crash", "signal %d" % -res.returncode, text)
        if res.returncode == 0:
            if re.fullmatch(rb"\d+\tf\.txt\n", res.stdout):
                return Result(n, "ok", "", text)
            return Result(n, "output", "exit 0 but stdout %r" % res.stdout[:80], text)
        err = res.stderr.decode("utf-8", "replace").strip()
        if res.returncode in (1, 2) and err and all(ln.startswith("civis-agent")
                                                    for ln in err.splitlines()):
            return Result(n, "ok", "clean error: " + err.splitlines()[0][:120], text)
        return Result(n, "status", "exit %d without a clean message" % res.returncode, text)

    def classify_agent(self, n, res, text):
        kind, detail = sanitizer_kind(text)
        if kind:
            return Result(n, kind, detail, text)
        if res.timed_out:
            return Result(n, "hang", "killed after %ss" % self.args.timeout, text)
        if res.returncode < 0:
            return Result(n, "crash", "signal %d" % -res.returncode, text)
        ran = res.stdout == b"a\n" and b"b\n" in res.stderr
        started = b"a\n" in res.stdout or res.stderr.startswith(b"b\n") or b"\nb\n" in res.stderr
        if ran:
            if res.returncode != 7:
                return Result(n, "status", "exit %d, want 7" % res.returncode, text)
            return Result(n, "ok", "", text)
        if started:
            return Result(n, "output", "the command ran but its output was not copied "
                          "through (stdout %r)" % res.stdout[:40], text)
        if res.returncode in (2, 126) and b"civis-agent: " in res.stderr:
            line = res.stderr.split(b"\n")[0].decode("utf-8", "replace")
            return Result(n, "refused", line, text)
        return Result(n, "status", "the command did not run and no clean message "
                      "(exit %d)" % res.returncode, text)

    # ------------------------------------------------------------ main

    def main(self):
        t0 = time.monotonic()
        only = set(self.args.only or [])
        for d in DRIVER_SCENARIOS:
            if not only or ("driver:" + d) in only or d in only:
                self.driver(d)
        for u in self.args.units.split():
            if not only or ("unit:" + u) in only or u in only:
                self.unit(u)
        for name, kw in AGENT_SCENARIOS:
            if (not only and (self.args.all or not kw.get("extra"))) or name in only:
                self.agent(name, **kw)
        wall = time.monotonic() - t0
        log("")
        log("torture summary (%.0f s, %d jobs; failures: %s):" % (wall, self.args.jobs,
                                                               "/".join(FAILURES)))
        total_fail = 0
        for scen, allocs, npts, kinds, how in self.summary:
            nfail = sum(kinds.get(k, 0) for k in FAILURES)
            total_fail += nfail
            info = ", ".join("%s %d" % kv for kv in sorted(kinds.items()) if kv[0] not in FAILURES)
            log("  %-22s %7d allocs %6d points tortured (%s) %4d failures%s" % (
                scen, allocs, npts, how, nfail, ("; " + info) if info else ""))
        log("%s: %d failures" % ("FAILED" if total_fail else "passed", total_fail))
        shutil.rmtree(self.tmp, ignore_errors=True)
        return 1 if total_fail else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "torture"))
    ap.add_argument("--units", default="linebuf logbatch logqueue redact client options upload loop")
    ap.add_argument("--only", action="append", help="scenario name (repeatable)")
    ap.add_argument("--max-points", type=int, default=1000,
                    help="points per unit scenario at most, sampled evenly beyond")
    ap.add_argument("--agent-max-points", type=int, default=400)
    ap.add_argument("--outputs-max-points", type=int, default=400)
    ap.add_argument("--agent-budget", type=float, default=45.0,
                    help="seconds of wall time an agent scenario may take (sets the sample)")
    ap.add_argument("--budget", type=float, default=20.0,
                    help="seconds of wall time a unit scenario may take (sets the sample)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--all", action="store_true",
                    help="also the scenarios marked extra (agent-outputs-sticky, -gzip)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    try:
        return Torture(args).main()
    except KeyboardInterrupt:
        return 2


if __name__ == "__main__":
    sys.exit(main())
