#!/usr/bin/env python3
"""bench.py: the project's figures, side by side, in one run (`make bench`).

    make bench                          every figure
    make bench BENCH=startup,flood      a subset (names below)
    make bench BENCH_QUICK=1            smaller sizes (a smoke run, ~2 min)

Figures: startup, tee, flood, latency, slowapi, redact, upload, small, updur,
outage, layer, pid1 (upload, small and pid1: tests/bench/bench_upload.py).

The machine this runs on is shared and noisy, so the things compared run
alternately (A B A B ...), figures are medians and ratios, and nothing here
asserts a timing: the verdict column says whether a target was met. What is
checked is correctness (every line arrived, in order, once; uploads arrived
byte-exact); a failure prints a "FAIL" line and makes the exit status 1.

Large temporary files live in build/bench/ (the 1 GiB random file is made
once and reused; `make clean` removes it)."""

import base64
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import string
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))
from harness import SimHarness  # noqa: E402
import bench_upload  # noqa: E402

AGENT = os.path.abspath(os.environ.get("CIVIS_AGENT") or os.path.join(ROOT, "build", "civis-agent"))
FLOOD = os.path.join(ROOT, "build", "tools", "flood")
SPAWNTIME = os.path.join(ROOT, "build", "tools", "spawntime")
BENCH_REDACT = os.path.join(ROOT, "build", "bench_redact")
BDIR = os.path.join(ROOT, "build", "bench")
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
ALL = ["startup", "tee", "flood", "latency", "slowapi", "redact", "upload", "small", "updur",
       "outage", "layer", "pid1", "image"]

MiB = 1 << 20
GiB = 1 << 30

SIZES = {
    # name: (full, quick)
    "startup_runs": (200, 50),
    "big_bytes": (GiB, 128 * MiB),
    "tee_rounds": (3, 2),
    "flood_lines": (1000000, 100000),
    "flood_rounds": (3, 2),
    "lat_lines": (200, 30),
    "slow_lines": (1000000, 30000),
    "slow_rounds": (2, 1),
    "redact_rounds": (3, 2),
    "redact_mb": (100, 20),
    "upload_rounds": (3, 1),
    "small_files": (1000, 100),
    "updur_lines": (200000, 40000),     # at 20,000 lines/s: 10 s (quick 2 s)
    "outage_lines": (2000000, 300000),
    "outage_rate": (50000, 50000),
    "outage_start": (5.0, 1.0),
    "outage_secs": (30.0, 3.0),
}


def size(name):
    return SIZES[name][1 if QUICK else 0]


# ------------------------------------------------------------------ reporting

TABLE = []      # (figure, measured, target, verdict)
FAILS = []
NUMS = {}       # figure key: number (BENCH_JSON=path writes them, for compare.py)


def say(msg=""):
    print(msg, flush=True)


def fail(msg):
    FAILS.append(msg)
    say("FAIL " + msg)


def row(figure, measured, target="-", ok=None):
    verdict = "-" if ok is None else ("met" if ok else "MISSED")
    TABLE.append((figure, measured, target, verdict))


def num(key, value):
    """Keep a figure as a number too (BENCH_JSON)."""
    NUMS[key] = value


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p):
    """p-th percentile (nearest rank) of xs."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def mib(kb):
    return kb / 1024.0


# ------------------------------------------------------------------ processes

_live = []


def _cleanup():
    for p in list(_live):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass


def start(argv, env=None, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE):
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                         start_new_session=True)
    _live.append(p)
    return p


def finish(p, timeout):
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        _, err = p.communicate()
        fail("%s: timed out after %ss" % (" ".join(p.args[:6]), timeout))
    if p in _live:
        _live.remove(p)
    return p.returncode, (err or b"").decode("utf-8", "replace")


def run(argv, env=None, timeout=600):
    """Run argv (stdout to /dev/null); returns (rc, wall s, stderr text)."""
    t0 = time.monotonic()
    p = start(argv, env)
    rc, err = finish(p, timeout)
    return rc, time.monotonic() - t0, err


def plain_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("CIVIS_")}


def tee_copy_args():
    """Options that make a run without the API copy the output through its
    pipes: an existing termination log (empty, in build/bench/). Without
    one, nothing needs the output and the command writes straight to the
    agent's stdout (no copy to measure)."""
    os.makedirs(BDIR, exist_ok=True)
    path = os.path.join(BDIR, "termination-log")
    open(path, "w").close()
    return ["--termination-log", path]


def parse_v(err):
    """The agent's -v summary: VmHWM kB, CPU s, spool bytes, delivery line."""
    out = {"hwm_kb": None, "cpu": None, "spool": None, "delivery": "", "requests": None}
    m = re.search(r"agent peak RSS \(VmHWM\): (\d+) kB", err)
    if m:
        out["hwm_kb"] = int(m.group(1))
    m = re.search(r"agent usage: CPU ([0-9.]+) s", err)
    if m:
        out["cpu"] = float(m.group(1))
    m = re.search(r"spool (\d+) bytes", err)
    if m:
        out["spool"] = int(m.group(1))
    m = re.search(r"civis-agent: delivery: ([^\n]*)", err)
    if m:
        out["delivery"] = m.group(1)
    m = re.search(r"(\d+) possible duplicate tries", err)
    out["dup_tries"] = int(m.group(1)) if m else None
    m = re.search(r"in (\d+) requests", err)
    if m:
        out["requests"] = int(m.group(1))
    return out


def read_timefile(path):
    """flood's TIMEFILE: (first write, exit) CLOCK_MONOTONIC seconds."""
    with open(path) as fh:
        a, b = fh.read().split()[:2]
    return int(a) / 1e9, int(b) / 1e9


def flood_argv(n, tf, extra=()):
    return [FLOOD, "-n", str(n), "-s", "100", "-t", tf] + list(extra)


def piped(argv):
    return ["sh", "-c", " ".join("'%s'" % a for a in argv) + " | cat > /dev/null"]


# ------------------------------------------------------------------ files

def big_file():
    """build/bench/big.bin (1 GiB of /dev/urandom, made once); quick: its first 128 MiB."""
    os.makedirs(BDIR, exist_ok=True)
    full = os.path.join(BDIR, "big.bin")
    if not os.path.exists(full) or os.path.getsize(full) != GiB:
        say("  making %s (1 GiB from /dev/urandom) ..." % full)
        tmp = full + ".tmp"
        subprocess.run("head -c %d /dev/urandom > '%s'" % (GiB, tmp), shell=True, check=True)
        os.rename(tmp, full)
    if not QUICK:
        return full
    small = os.path.join(BDIR, "big-quick.bin")
    if not os.path.exists(small) or os.path.getsize(small) != size("big_bytes"):
        subprocess.run("head -c %d '%s' > '%s'" % (size("big_bytes"), full, small),
                       shell=True, check=True)
    return small


_sha_cache = {}


def sha256_of(path):
    if path not in _sha_cache:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while True:
                b = fh.read(4 * MiB)
                if not b:
                    break
                h.update(b)
        _sha_cache[path] = h.hexdigest()
    return _sha_cache[path]


def warm(path):
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)


# ------------------------------------------------------------------ simulator

def fetch_lines(h, page=200000):
    """The flood lines the simulator stored, in arrival order, paged:
    [(createdAt, seq, write realtime ns, requestSeq)]; other messages (the
    agent's own notes) are left out."""
    out = []
    off = 0
    while True:
        recs = h.control("GET", "logs", query={"offset": off, "limit": page}, timeout=120)
        for r in recs:
            f = r["message"].split(" ", 2)
            if len(f) >= 2 and f[0].isdigit() and f[1].isdigit():
                out.append((r["createdAt"], int(f[0]), int(f[1]), r.get("requestSeq")))
        off += len(recs)
        if len(recs) < page:
            return out


def check_lines(h, n, what, dup_ok=False):
    """All n flood lines arrived at the simulator, none twice, and in order by
    createdAt (the order the API serves a run log in; the agent may have two
    requests in flight, so whole batches can arrive out of order). Returns
    (ok, lines) with lines as fetch_lines gives them."""
    lines = fetch_lines(h)
    by_time = [x[1] for x in sorted(lines, key=lambda x: x[0])]
    arrival = [x[1] for x in lines]
    ok = True
    check_lines.dup = 0
    if by_time != list(range(n)):
        got = set(by_time)
        lost = n - len(got & set(range(n)))
        dup = len(by_time) - len(got)
        check_lines.dup = dup
        once = []
        for x in by_time:
            if not once or x != once[-1]:
                once.append(x)
        inversions = sum(1 for a, b in zip(once, once[1:]) if b <= a)
        msg = ("%s: %d of %d lines arrived: %d lost, %d twice, %d out of order by createdAt "
               "(duplicates aside)" % (what, len(by_time), n, lost, dup, inversions))
        if dup_ok and not lost and not inversions:
            say("  NOTE " + msg)
        else:
            fail(msg)
            ok = False
        if dup:     # which requests carried the lines stored twice
            seen, twice = {}, {}
            for _, sq, _, rs in lines:
                if sq in seen:
                    twice.setdefault((seen[sq], rs), 0)
                    twice[(seen[sq], rs)] += 1
                else:
                    seen[sq] = rs
            reqs = {q["seq"]: q for q in h.requests("api")}
            for (r1, r2), k in sorted(twice.items())[:5]:
                q1, q2 = reqs.get(r1, {}), reqs.get(r2, {})
                say("  %d lines stored by request %s (status %s, fault %s, %.3f s) and again by "
                    "request %s (status %s, %.3f s later)" % (
                        k, r1, q1.get("status"), q1.get("fault"), q1.get("duration") or 0, r2,
                        q2.get("status"), (q2.get("mono") or 0) - (q1.get("mono") or 0)))
    swaps = sum(1 for a, b in zip(arrival, arrival[1:]) if b < a)
    if ok and swaps and not check_lines.dup:
        say("  (%s: all %d lines, in createdAt order; %d batch(es) stored out of arrival order: "
            "concurrent requests)" % (what, n, swaps))
    return ok, lines


def log_requests(h):
    return [r for r in h.requests("api")
            if r["method"] == "POST" and r["path"].endswith("/logs")]


def sim_ingest_rate(h, lines=200000, batch=1000):
    """The simulator's own ingest rate: batches of `batch` 100-byte lines posted
    over one keep-alive connection, back to back."""
    h.reset()
    msgs = [{"message": "%d 1795800000000000000 " % i + "x" * 70, "level": "info",
             "createdAt": "2026-11-27T18:00:00.%06dZ" % (i % 1000000)} for i in range(batch)]
    body = json.dumps({"messages": msgs}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", h.api_port, timeout=60)
    hdr = {"Authorization": "Basic " + base64.b64encode((h.api_key + ":").encode()).decode(),
           "Content-Type": "application/json"}
    t0 = time.monotonic()
    for _ in range(lines // batch):
        conn.request("POST", "/" + h.run_path("/logs"), body=body, headers=hdr)
        r = conn.getresponse()
        r.read()
        if r.status != 204:
            fail("sim ingest: status %d" % r.status)
            break
    dt = time.monotonic() - t0
    conn.close()
    h.reset()
    return lines / dt, len(body) * (lines // batch) / dt / 1e6


# ------------------------------------------------------------------ 1. start-up

def bench_startup(h):
    say("== 1. start-up: civis-agent -- true against true (no CIVIS_* variables)")
    n = size("startup_runs")
    rounds = 5
    per = max(1, n // rounds)
    env = plain_env()
    true = shutil.which("true")
    res = {"true": [], "agent": []}
    mins = {"true": [], "agent": []}
    for _ in range(rounds):
        for name, argv in (("true", [true]), ("agent", [AGENT, "--", true])):
            out = subprocess.run([SPAWNTIME, str(per)] + argv, env=env, check=True,
                                 stdout=subprocess.PIPE, text=True).stdout.split()
            res[name].append(float(out[0]))
            mins[name].append(float(out[2]))
    t, a = med(res["true"]), med(res["agent"])
    added = (a - t) / 1000.0
    added_min = (min(mins["agent"]) - min(mins["true"])) / 1000.0
    say("  true %.0f us, agent -- true %.0f us (median of %d round medians, %d runs each)"
        % (t, a, rounds, per * rounds))
    say("  round medians us: true %s; agent %s" % (
        [round(x) for x in res["true"]], [round(x) for x in res["agent"]]))
    say("  minimum: true %.0f us, agent %.0f us: %.2f ms added (the least disturbed runs)" % (
        min(mins["true"]), min(mins["agent"]), added_min))
    row("1 start-up added (median)", "%.2f ms" % added, "< 2 ms", added < 2.0)
    num("startup_added_ms", added)
    num("startup_added_min_ms", added_min)
    row("1 start-up added (min)", "%.2f ms" % added_min)


# ------------------------------------------------------------------ 2. tee

def bench_tee(h):
    big = big_file()
    gb = os.path.getsize(big) / GiB
    say("== 2. tee throughput: civis-agent -- cat BIG > /dev/null against cat BIG | cat > /dev/null (%.3g GiB, no API; "
        "a termination log keeps the copy)" % gb)
    warm(big)
    env = plain_env()
    a_w, b_w, hwm = [], [], []
    for i in range(size("tee_rounds")):
        rc, w, err = run([AGENT, "-v"] + tee_copy_args() + ["--", "cat", big], env=env)
        if rc != 0:
            fail("tee: agent exit %d: %s" % (rc, err[-500:]))
        v = parse_v(err)
        a_w.append(w)
        if v["hwm_kb"]:
            hwm.append(v["hwm_kb"])
        rc, w2, err = run(["sh", "-c", "cat '%s' | cat > /dev/null" % big], env=env)
        b_w.append(w2)
        say("  round %d: agent %.3f s, pipe %.3f s (%.2fx), VmHWM %s kB" % (
            i + 1, w, w2, w / w2, v["hwm_kb"]))
    ratio = med(a_w) / med(b_w)
    say("  median: agent %.3f s (%.0f MB/s), pipe %.3f s; ratio %.3f" % (
        med(a_w), os.path.getsize(big) / med(a_w) / 1e6, med(b_w), ratio))
    row("2 tee wall ratio", "%.3f" % ratio, "<= 1.10", ratio <= 1.10)
    num("tee_ratio", ratio)
    num("tee_agent_s", med(a_w))
    num("tee_pipe_s", med(b_w))
    if hwm:
        num("tee_hwm_kb", max(hwm))
    if hwm:
        row("2 tee agent peak RSS", "%.1f MiB" % mib(max(hwm)), "< 12 MiB", mib(max(hwm)) < 12)


# ------------------------------------------------------------------ 3. flood

def flood_under_agent(h, n, tf, extra_args=(), extra_env=None, flood_extra=(), timeout=900):
    h.reset()
    env = h.env(extra_env)
    rc, wall, err = run([AGENT, "-v"] + list(extra_args) + ["--"] + flood_argv(n, tf, flood_extra),
                        env=env, timeout=timeout)
    if rc != 0:
        fail("agent exit %d: %s" % (rc, err[-800:]))
    first, exit_ = read_timefile(tf)
    return {"wall": wall, "run": exit_ - first, "first": first, "exit": exit_, "v": parse_v(err),
            "err": err}


def flood_piped(n, tf, flood_extra=()):
    rc, wall, err = run(piped(flood_argv(n, tf, flood_extra)), env=plain_env())
    if rc != 0:
        fail("piped flood exit %d: %s" % (rc, err[-300:]))
    first, exit_ = read_timefile(tf)
    return exit_ - first


def bench_flood(h):
    n = size("flood_lines")
    say("== 3. log flood: %d lines of 100 bytes, under the agent with the API against | cat > /dev/null" % n)
    tf = os.path.join(BDIR, "flood.time")
    os.makedirs(BDIR, exist_ok=True)
    a_run, b_run, hwm, lpr, tail, rate_l, rate_b = [], [], [], [], [], [], []
    c_run, c_cpu, d_run, a_cpu = [], [], [], []
    for i in range(size("flood_rounds")):
        r = flood_under_agent(h, n, tf)
        reqs = log_requests(h)
        ok, _ = check_lines(h, n, "flood round %d" % (i + 1))
        nreq = len(reqs)
        last = max((q["mono"] + (q.get("duration") or 0.0)) for q in reqs) if reqs else float("nan")
        span = last - r["first"]
        a_run.append(r["run"])
        hwm.append(r["v"]["hwm_kb"] or 0)
        lpr.append(n / nreq if nreq else 0)
        tail.append(last - r["exit"])
        rate_l.append(n / span)
        rate_b.append(n * 100 / span / 1e6)
        b = flood_piped(n, tf)
        b_run.append(b)
        # diagnosis: the agent without the API (tee only, through the pipes), and with
        # the API but no tee
        rc, _, err = run([AGENT, "-v"] + tee_copy_args() + ["--"] + flood_argv(n, tf),
                         env=plain_env())
        c = read_timefile(tf)
        c_run.append(c[1] - c[0])
        c_cpu.append(parse_v(err)["cpu"] or 0)
        d = flood_under_agent(h, n, tf, ["--no-tee"])
        d_run.append(d["run"])
        a_cpu.append(r["v"]["cpu"] or 0)
        say("  round %d: command %.3f s under agent, %.3f s piped (%.2fx); last line at the sim "
            "%.3f s after the command's exit (%.3f s after its first write); %d log requests "
            "(%.0f lines each); VmHWM %s kB; spool %s bytes; agent CPU %.3f s, wall %.3f s%s" % (
                i + 1, r["run"], b, r["run"] / b, last - r["exit"], span, nreq, lpr[-1],
                r["v"]["hwm_kb"], r["v"]["spool"], r["v"]["cpu"] or 0, r["wall"],
                "" if ok else "  (lines FAILED)"))
        say("           diagnosis: command %.3f s under the agent without the API (tee only; "
            "agent CPU %.3f s), %.3f s with the API and --no-tee" % (c_run[-1], c_cpu[-1], d_run[-1]))
    ratio = med(a_run) / med(b_run)
    say("  median: command %.3f s under agent vs %.3f s piped: ratio %.3f; tee only %.3f s (%.2fx), "
        "API without tee %.3f s (%.2fx); agent CPU %.3f s with the API, %.3f s tee only" % (
            med(a_run), med(b_run), ratio, med(c_run), med(c_run) / med(b_run), med(d_run),
            med(d_run) / med(b_run), med(a_cpu), med(c_cpu)))
    say("  delivery: %.0f lines/s, %.1f MB/s of payload (first write -> last line stored); "
        "last line %.3f s after exit" % (med(rate_l), med(rate_b), med(tail)))
    ing_l, ing_mb = sim_ingest_rate(h)
    say("  simulator's own ingest (1000-line batches, one connection, back to back): "
        "%.0f lines/s, %.1f MB/s of JSON" % (ing_l, ing_mb))
    if med(rate_l) > 0.7 * ing_l:
        say("  -> the agent delivers at %.0f%% of what the simulator ingests alone: the simulator "
            "is (close to) the bottleneck" % (100 * med(rate_l) / ing_l))
    row("3 flood command time ratio", "%.3f" % ratio, "<= 1.15", ratio <= 1.15)
    num("flood_ratio", ratio)
    num("flood_agent_s", med(a_run))
    num("flood_pipe_s", med(b_run))
    num("flood_lines_per_request", med(lpr))
    num("flood_hwm_kb", max(hwm))
    num("flood_agent_cpu_s", med(a_cpu))
    num("flood_tee_only_ratio", med(c_run) / med(b_run))
    num("flood_no_tee_ratio", med(d_run) / med(b_run))
    num("flood_last_line_s", med(tail))
    row("3 flood ratio, diagnosis", "tee only %.2f, API --no-tee %.2f" % (
        med(c_run) / med(b_run), med(d_run) / med(b_run)))
    row("3 flood lines per request", "%.0f" % med(lpr), ">= 1000", med(lpr) >= 1000)
    row("3 flood agent peak RSS", "%.1f MiB" % mib(max(hwm)), "< 16 MiB", mib(max(hwm)) < 16)
    row("3 flood delivery rate", "%.0f lines/s, %.1f MB/s" % (med(rate_l), med(rate_b)),
        "(sim alone %.0f l/s)" % ing_l)
    row("3 flood last line after exit", "%.2f s" % med(tail))
    return med(a_run)


# ------------------------------------------------------------------ 4. latency

def bench_latency(h):
    n = size("lat_lines")
    say("== 4. latency: one line every 100 ms for %.0f s, write -> arrival at the simulator" % (n / 10))
    tf = os.path.join(BDIR, "lat.time")
    os.makedirs(BDIR, exist_ok=True)
    flood_under_agent(h, n, tf, flood_extra=["-i", "100"])
    _, lines = check_lines(h, n, "latency")
    req_time = {q["seq"]: q["time"] for q in h.requests("api")}
    lat = [req_time[rs] - ns / 1e9 for _, _, ns, rs in lines if rs in req_time]
    if not lat:
        fail("latency: no lines matched to requests")
        return
    p50, p99 = pct(lat, 50), pct(lat, 99)
    say("  %d lines in %d log requests: p50 %.3f s, p99 %.3f s, max %.3f s, min %.3f s"
        % (len(lat), len(log_requests(h)), p50, p99, max(lat), min(lat)))
    row("4 latency p50 / p99", "%.3f / %.3f s" % (p50, p99), "p99 <= 1.5 s", p99 <= 1.5)


# ------------------------------------------------------------------ 5. slow API

def bench_slowapi(h):
    n = size("slow_lines")
    say("== 5. slow API: every API request answered after 2 s; %d-line flood, fast vs slow simulator" % n)
    tf = os.path.join(BDIR, "slow.time")
    os.makedirs(BDIR, exist_ok=True)
    fast, slow, backlog = [], [], []
    args = ["--final-flush-timeout", "300s"]
    for i in range(size("slow_rounds")):
        h.set_faults([])
        r = flood_under_agent(h, n, tf, args)
        check_lines(h, n, "slowapi fast round %d" % (i + 1))
        fast.append(r["run"])
        h.reset()
        h.set_faults([{"action": "delay", "seconds": 2, "path": "/scripts/"}])
        env = h.env()
        rc, wall, err = run([AGENT, "-v"] + args + ["--"] + flood_argv(n, tf), env=env, timeout=420)
        if rc != 0:
            fail("slowapi: agent exit %d: %s" % (rc, err[-800:]))
        first, exit_ = read_timefile(tf)
        h.set_faults([])
        ok, _ = check_lines(h, n, "slowapi slow round %d" % (i + 1))
        reqs = log_requests(h)
        last = max(q["mono"] + (q.get("duration") or 0) for q in reqs) if reqs else float("nan")
        slow.append(exit_ - first)
        backlog.append(last - exit_)
        v = parse_v(err)
        say("  round %d: command %.3f s fast, %.3f s slow (%.2fx); backlog delivered %.1f s after "
            "the command's exit in %d log requests; agent wall %.1f s; VmHWM %s kB, spool %s bytes"
            % (i + 1, fast[-1], slow[-1], slow[-1] / fast[-1], backlog[-1], len(reqs), wall,
               v["hwm_kb"], v["spool"]))
    ratio = med(slow) / med(fast)
    row("5 slow API command time ratio", "%.3f" % ratio, "<= 1.2", ratio <= 1.2)
    row("5 slow API backlog after exit", "%.1f s (%d lines)" % (med(backlog), n))


# ------------------------------------------------------------------ 6. redaction

def bench_redact(h):
    n = size("flood_lines")
    say("== 6. redaction: %d-line flood with 50 secrets registered against none: agent CPU" % n)
    tf = os.path.join(BDIR, "redact.time")
    os.makedirs(BDIR, exist_ok=True)
    rnd = random.Random(1234)
    abc = string.ascii_letters + string.digits
    secrets = {"S%d_SECRET" % i: "".join(rnd.choice(abc) for _ in range(rnd.randint(32, 40)))
               for i in range(1, 51)}
    none_cpu, with_cpu = [], []
    for i in range(size("redact_rounds")):
        r0 = flood_under_agent(h, n, tf)
        st = h.state()["logs"]
        if st < n:
            fail("redact: %d of %d lines without secrets" % (st, n))
        r1 = flood_under_agent(h, n, tf, extra_env=secrets)
        st = h.state()["logs"]
        if st < n:
            fail("redact: %d of %d lines with secrets" % (st, n))
        none_cpu.append(r0["v"]["cpu"])
        with_cpu.append(r1["v"]["cpu"])
        say("  round %d: agent CPU %.3f s without secrets, %.3f s with 50 (%.2fx)" % (
            i + 1, r0["v"]["cpu"], r1["v"]["cpu"], r1["v"]["cpu"] / r0["v"]["cpu"]))
    ratio = med(with_cpu) / med(none_cpu)
    row("6 redaction agent CPU ratio", "%.3f" % ratio, "<= 1.10", ratio <= 1.10)
    if os.access(BENCH_REDACT, os.X_OK):
        out = subprocess.run([BENCH_REDACT, str(size("redact_mb"))], stdout=subprocess.PIPE,
                             text=True, check=False).stdout
        for ln in out.splitlines():
            say("  " + ln)
        m = [float(x) for x in re.findall(r"50 secrets .*?65536-byte feeds:\s+([0-9.]+) MB/s", out)]
        m100 = [float(x) for x in re.findall(r"50 secrets .*?100-byte feeds:\s+([0-9.]+) MB/s", out)]
        if m:
            row("6 bench_redact 50 secrets", "%.0f MB/s (64K), %.0f MB/s (100B), worst" % (
                min(m), min(m100) if m100 else float("nan")))
    else:
        fail("redact: %s missing" % BENCH_REDACT)


# ------------------------------------------------------------------ 7. upload

def sample_hwm(p, stop, out):
    path = "/proc/%d/status" % p.pid
    while not stop.is_set():
        try:
            with open(path) as fh:
                for ln in fh:
                    if ln.startswith("VmHWM:"):
                        out[0] = int(ln.split()[1])
        except OSError:
            pass
        stop.wait(0.05)


def agent_upload(h, path, args=()):
    p = start([AGENT, "upload"] + list(args) + [path], env=h.env(), stdout=subprocess.PIPE)
    hwm = [0]
    stop = threading.Event()
    t = threading.Thread(target=sample_hwm, args=(p, stop, hwm), daemon=True)
    t0 = time.monotonic()
    t.start()
    try:
        out, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        fail("upload: agent timed out")
    wall = time.monotonic() - t0
    stop.set()
    t.join()
    _live.remove(p)
    if p.returncode != 0:
        fail("upload: agent exit %d: %s" % (p.returncode, err.decode("utf-8", "replace")[-500:]))
    return wall, hwm[0]


def curl_upload(h, path):
    st, _, body = h.api("POST", "/files/", {"name": os.path.basename(path)})
    if st != 201:
        fail("upload: POST /files/ gave %d" % st)
        return float("nan")
    fp = json.loads(body)
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"]
    for k, v in fp["uploadFields"].items():
        argv += ["--form-string", "%s=%s" % (k, v)]
    argv += ["-F", "file=@%s" % path, fp["uploadUrl"]]
    t0 = time.monotonic()
    r = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if r.stdout.strip() not in ("201", "204"):
        fail("upload: curl got %s" % r.stdout.strip())
    return wall


def check_upload(h, path, what):
    want = sha256_of(path)
    files = [f for f in h.files() if f.get("sha256")]
    if not files or files[-1]["sha256"] != want or files[-1].get("size") != os.path.getsize(path):
        fail("%s: the stored file is not the file (%s)" % (what, files[-1] if files else None))
        return False
    return True


def bench_updur(h):
    big = big_file()
    warm(big)
    sha256_of(big)
    say("== 7c. a log flood during the upload of %.3g GiB" % (os.path.getsize(big) / GiB))
    # a log flood while the big file uploads
    nl = size("updur_lines")
    out = os.path.join(BDIR, "up-out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    tf = os.path.join(BDIR, "updur.time")
    h.reset()
    cmd = "cp '%s' '%s/big.bin' && exec %s" % (big, out, " ".join(
        "'%s'" % a for a in flood_argv(nl, tf, ["-r", "20000"])))
    rc, wall, err = run([AGENT, "-v", "--output-dir", out, "--", "sh", "-c", cmd], env=h.env(),
                        timeout=900)
    if rc != 0:
        fail("flood during upload: agent exit %d: %s" % (rc, err[-800:]))
    first, exit_ = read_timefile(tf)
    ok, _ = check_lines(h, nl, "flood during upload")
    check_upload(h, big, "flood during upload")
    reqs = sorted(log_requests(h), key=lambda q: q["mono"])
    during = [q["mono"] for q in reqs if first <= q["mono"] <= exit_]
    gaps = [b - a for a, b in zip(during, during[1:])]
    sreq = [q for q in h.requests("storage")]
    up_end = max((q["mono"] + (q.get("duration") or 0)) for q in sreq) if sreq else float("nan")
    up_start = min(q["mono"] for q in sreq) if sreq else float("nan")
    maxgap = max(gaps) if gaps else float("inf")
    say("  flood of %d lines at 20,000/s during the upload: command %.2f s, upload %.2f s "
        "(%.2f..%.2f s after the first write), %d log requests while it ran, max gap %.3f s"
        % (nl, exit_ - first, up_end - up_start, up_start - first, up_end - first, len(during), maxgap))
    row("7 log gap during the big upload", "%.3f s max" % maxgap, "<= 1 s, none lost",
        ok and maxgap <= 1.0)
    shutil.rmtree(out, ignore_errors=True)


# ------------------------------------------------------------------ 8. outage

def sim_state_direct(h):
    conn = http.client.HTTPConnection("127.0.0.1", h.storage_port, timeout=10)
    try:
        conn.request("GET", "/_sim/state")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def bench_outage(h):
    n, rate = size("outage_lines"), size("outage_rate")
    t_out, secs = size("outage_start"), size("outage_secs")
    say("== 8. outage: %d lines at %d/s; the API refuses connections from %.0f s for %.0f s"
        % (n, rate, t_out, secs))
    tf = os.path.join(BDIR, "outage.time")
    os.makedirs(BDIR, exist_ok=True)
    h.reset()
    p = start([AGENT, "-v", "--final-flush-timeout", "300s", "--"] + flood_argv(n, tf, ["-r", str(rate)]),
              env=h.env())
    t0 = time.monotonic()
    samples = []      # (mono, logs stored)
    refused_at = None
    while p.poll() is None:
        now = time.monotonic()
        if refused_at is None and now - t0 >= t_out:
            h.refuse("api", secs, after=0.0)
            refused_at = time.monotonic()
        try:
            samples.append((time.monotonic(), sim_state_direct(h)["logs"]))
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
        if now - t0 > 900:
            break
    rc, err = finish(p, 60)
    if rc != 0:
        fail("outage: agent exit %d: %s" % (rc, err[-800:]))
    v = parse_v(err)
    first, exit_ = read_timefile(tf)
    ok, _ = check_lines(h, n, "outage", dup_ok=True)
    dup = check_lines.dup
    if dup and not v.get("dup_tries"):
        fail("outage: %d lines stored twice, but the agent's -v summary counts %s possible "
             "duplicate tries" % (dup, v.get("dup_tries")))
    reqs = log_requests(h)
    back = refused_at + secs if refused_at else float("nan")    # the listener reopens
    ok_after = [q["mono"] for q in reqs if q["mono"] >= back and q.get("status") == 204]
    back_seen = min(ok_after) if ok_after else back              # the agent's first success
    # the backlog: lines written before the API came back (the flood is paced)
    written = min(n, int(rate * max(0.0, back - first)))
    at_back = max([c for t, c in samples if t <= back] or [0])
    last = max(q["mono"] + (q.get("duration") or 0) for q in reqs) if reqs else float("nan")
    caught = next(((t, c) for t, c in samples if t >= back and c >= written), None)
    if caught is None:      # caught up only in the final flush, after the last sample
        caught = (last, n)
    dt = caught[0] - back
    busy = caught[0] - back_seen
    drate = (caught[1] - at_back) / busy if busy > 0 else float("nan")
    say("  command %.1f s; outage %.1f..%.1f s after the first write; %d lines stored before it, "
        "%d written by the API's return; the agent's first accepted request %.2f s after the "
        "return; backlog delivered %.2f s after the return (%.0f lines/s from the first accepted "
        "request); last line %.2f s after the command's exit; VmHWM %s kB; spool %s bytes; %s"
        % (exit_ - first, refused_at - first, back - first, at_back, written, back_seen - back, dt,
           drate, last - exit_, v["hwm_kb"], v["spool"], v["delivery"]))
    if v["hwm_kb"]:
        row("8 outage agent peak RSS", "%.1f MiB" % mib(v["hwm_kb"]), "< 16 MiB",
            mib(v["hwm_kb"]) < 16)
    row("8 outage spool", "%.1f MB" % ((v["spool"] or 0) / 1e6))
    row("8 outage: none lost, in order", "yes" if ok else "NO", "all", ok)
    row("8 outage: lines stored twice", "%d (agent: %s possible dup. tries)" % (
        dup, v.get("dup_tries")), "-")
    row("8 outage backlog after return", "%.1f s (reconnect %.1f s), %.0f lines/s" % (
        dt, back_seen - back, drate))


# ------------------------------------------------------------------ 9. layer

def bench_layer(h):
    say("== 9. layer: make layer-bench")
    try:
        with open(os.path.join(ROOT, "mk", "layer.mk")) as fh:
            has = re.search(r"^layer-bench\s*:", fh.read(), re.M) is not None
    except OSError:
        has = False
    if not has:
        say("  mk/layer.mk has no layer-bench target: skipped")
        return
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    env.pop("MAKELEVEL", None)
    r = subprocess.run(["make", "-s", "--no-print-directory", "layer-bench"], cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for ln in r.stdout.splitlines():
        say("  " + ln)
    if r.returncode != 0:
        fail("layer-bench exit %d" % r.returncode)
        return
    ov = re.search(r"launcher overhead: ([+-]?\d+) us median", r.stdout)
    sz = re.search(r"layer size: \d+ bytes \(([0-9.]+ MiB)\)", r.stdout)
    row("9 layer size, launcher overhead", "%s, %s us" % (sz.group(1) if sz else "?",
                                                       ov.group(1) if ov else "?"))


def bench_image(h):
    """The images with a real engine (tests/image/bench.py through make image-bench)."""
    say("== 10. image: make image-bench")
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(k, None)
    try:
        r = subprocess.run(["make", "-s", "--no-print-directory", "image-bench"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=1800)
    except subprocess.TimeoutExpired:
        fail("image-bench took over 1800 s")
        return
    for ln in r.stdout.splitlines():
        say("  " + ln)
    if r.returncode != 0:
        fail("image-bench exit %d" % r.returncode)
        return
    st = re.search(r"start-up, median of \d+: .*?: ([+-][0-9.]+) ms \(median of the paired "
                   r"differences ([+-][0-9.]+) ms\)", r.stdout)
    rss = re.search(r"tee only ([0-9.]+) MiB, with the API .*?([0-9.]+) MiB", r.stdout)
    sz = re.search(r"([0-9.]+ MiB)", r.stdout)
    row("10 image size, start-up added, RSS tee/API",
        "%s; %s ms (paired %s ms); %s / %s MiB" % (
            sz.group(1) if sz else "?", st.group(1) if st else "?", st.group(2) if st else "?",
            rss.group(1) if rss else "?", rss.group(2) if rss else "?"))


# ------------------------------------------------------------------ main

FUNCS = {"startup": bench_startup, "tee": bench_tee, "flood": bench_flood, "latency": bench_latency,
         "slowapi": bench_slowapi, "redact": bench_redact, "upload": bench_upload.bench_upload,
         "small": bench_upload.bench_small, "updur": bench_updur, "outage": bench_outage,
         "layer": bench_layer, "pid1": bench_upload.bench_pid1, "image": bench_image}


def main():
    bench_upload.B = sys.modules[__name__]
    sel = [s.strip() for s in os.environ.get("BENCH", "").split(",") if s.strip()] or ALL
    bad = [s for s in sel if s not in FUNCS]
    if bad:
        sys.exit("bench: unknown figure(s) %s; known: %s" % (", ".join(bad), ", ".join(ALL)))
    for tool in (AGENT, FLOOD, SPAWNTIME):
        if not os.access(tool, os.X_OK):
            sys.exit("bench: %s missing (make all tools)" % tool)
    say("civis-agent bench: %s; %s; %d CPUs; %s%s" % (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), AGENT, os.cpu_count(),
        os.uname().release, "; QUICK sizes" if QUICK else ""))
    load_start = ""
    try:
        with open("/proc/loadavg") as fh:
            load_start = " ".join(fh.read().split()[:3])
            say("load average at start: " + load_start)
    except OSError:
        pass
    t_all = time.monotonic()
    # etag opaque: the simulator hashes a stored file when the check asks,
    # not while it arrives (tests/sim/README.md, ETag), so that its CPU is
    # not what the upload figures measure; the check is as exact
    h = SimHarness(max_lifetime=3600, sim_args=["--etag", "opaque"])
    h.start()
    try:
        for name in sel:
            t0 = time.monotonic()
            try:
                FUNCS[name](h)
            except Exception as e:   # one broken figure must not hide the others
                fail("%s: %s: %s" % (name, type(e).__name__, e))
            say("  (%s took %.0f s)" % (name, time.monotonic() - t0))
    finally:
        h.stop()
        _cleanup()
    row("correctness (lines, uploads)", "%d FAIL" % len(FAILS), "0 FAIL", not FAILS)
    say("")
    w = [max(len(r[i]) for r in TABLE + [("figure", "measured", "target", "verdict")]) for i in range(4)]
    fmt = "%%-%ds  %%-%ds  %%-%ds  %%s" % (w[0], w[1], w[2])
    say(fmt % ("figure", "measured", "target", "verdict"))
    for r in TABLE:
        say(fmt % r)
    say("")
    say("bench: %d figures in %.0f s; %s" % (len(sel), time.monotonic() - t_all,
                                              "%d FAIL" % len(FAILS) if FAILS else "no FAIL"))
    load_end = ""
    try:
        with open("/proc/loadavg") as fh:
            load_end = " ".join(fh.read().split()[:3])
            say("load average at end: " + load_end)
    except OSError:
        pass
    if os.environ.get("BENCH_JSON"):
        with open(os.environ["BENCH_JSON"], "w") as fh:
            json.dump({"agent": AGENT, "figures": sel, "nums": NUMS, "table": TABLE,
                       "fails": FAILS, "load_start": load_start, "load_end": load_end,
                       "seconds": time.monotonic() - t_all}, fh, indent=1)
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
