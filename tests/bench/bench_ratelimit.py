#!/usr/bin/env python3
"""bench_ratelimit.py: the API rate limit shared with the user's code (issue 13.3).

A figure, not a test: nothing here asserts a time. Against the simulator with
a scaled limit (default 100 requests per 30 s per key, for Civis's 1,000 per
300 s), the agent runs a command that, at once,

- floods the run log (build/tools/flood, LINES lines at RATE lines/s),
- leaves OUTPUTS small files in --output-dir, one every few tens of ms,
- runs a stand-in for the user's code: a Python loop making its own API calls
  (GET /scripts/containers/{id}/runs/{run_id}, User-Agent civis-python/...)
  every USER_MS ms for as long as the command runs.

It runs twice: with the agent's budget on (--api-budget, default 20%) and
off (--api-budget off), and reports for each

- the 429s the user's calls got (the stand-in's own count and the simulator's),
- the agent's requests per window of the limit, and its most in any sliding
  window, against its budget (budget% of the limit),
- the agent's 429s, its wall time,
- that nothing was lost: every flood line stored exactly once (duplicates
  only up to the agent's own count of possible duplicate tries), every output
  registered once, byte-exact.

    python3 tests/bench/bench_ratelimit.py [--limit 100] [--window 30] [--budget 20]
        [--lines 100000] [--rate 10000] [--outputs 300] [--user-ms 500] [--quick]

Needs build/civis-agent and build/tools/flood (make all tools). Exit status 1
when something was lost (the figures are printed either way)."""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from harness import SimHarness  # noqa: E402
import util  # noqa: E402

AGENT = os.path.abspath(os.environ.get("CIVIS_AGENT") or os.path.join(ROOT, "build", "civis-agent"))
FLOOD = os.path.join(ROOT, "build", "tools", "flood")

# The stand-in for the user's code: its own API calls, with its own
# User-Agent, until the stop file appears; its counts go to a JSON file.
USER_CODE = r'''
import base64, json, os, sys, time, urllib.request, urllib.error
ep = os.environ["CIVIS_API_ENDPOINT"].rstrip("/")
url = "%s/scripts/containers/%s/runs/%s" % (ep, os.environ["CIVIS_JOB_ID"], os.environ["CIVIS_RUN_ID"])
auth = "Basic " + base64.b64encode((os.environ["CIVIS_API_KEY"] + ":").encode()).decode()
every, stop, out = float(sys.argv[1]) / 1000.0, sys.argv[2], sys.argv[3]
n = limited = errors = 0
t_next = time.monotonic()
while not os.path.exists(stop):
    req = urllib.request.Request(url, headers={"Authorization": auth,
                                 "User-Agent": "civis-python/2.4.0 bench-user-standin"})
    n += 1
    try:
        urllib.request.urlopen(req, timeout=10).read()
    except urllib.error.HTTPError as e:
        if e.code == 429:
            limited += 1
        else:
            errors += 1
    except Exception:
        errors += 1
    t_next += every
    time.sleep(max(0.0, t_next - time.monotonic()))
with open(out, "w") as fh:
    json.dump({"requests": n, "limited": limited, "errors": errors}, fh)
'''

# The command: the user's code in the background, the flood, the outputs
# one by one, then stop the user's code and wait for it.
COMMAND = r'''
set -e
python3 "$BENCH_DIR/user.py" "$USER_MS" "$BENCH_DIR/stop" "$BENCH_DIR/user.json" &
upid=$!
"$FLOOD" -n "$LINES" -r "$RATE" -s 80 &
fpid=$!
i=0
while [ $i -lt "$OUTPUTS" ]; do
    printf 'output %d of the bench\n' $i > "$OUT_DIR/.tmp"
    head -c 512 /dev/urandom >> "$OUT_DIR/.tmp"
    mv "$OUT_DIR/.tmp" "$OUT_DIR/out-$(printf %04d $i).bin"
    i=$((i + 1))
    sleep "$OUT_PAUSE"
done
wait $fpid
sleep "$TAIL_S"
touch "$BENCH_DIR/stop"
wait $upid
'''


def run_case(args, budget):
    tmp = tempfile.mkdtemp(prefix="civis-bench-rl-")
    outdir = os.path.join(tmp, "out")
    os.mkdir(outdir)
    with open(os.path.join(tmp, "user.py"), "w") as fh:
        fh.write(USER_CODE)
    sim_args = ["--rate-limit", str(args.limit), "--rate-window", str(args.window)]
    r = {"budget": budget}
    try:
        with SimHarness(sim_args=sim_args) as h:
            env = {
                "BENCH_DIR": tmp, "OUT_DIR": outdir, "FLOOD": FLOOD, "LINES": str(args.lines),
                "RATE": str(args.rate), "OUTPUTS": str(args.outputs),
                "OUT_PAUSE": "%.3f" % args.out_pause, "USER_MS": str(args.user_ms),
                "TAIL_S": str(args.tail),
            }
            t0 = time.monotonic()
            ab = budget if budget == "off" else "%s:%d/%gs" % (budget, args.limit, args.window)
            res = h.run_agent(["-v", "--api-budget", ab, "--output-dir", outdir,
                               "--spool-dir", tmp, "--no-tee", "--", "sh", "-c", COMMAND],
                              extra_env=env, timeout=args.timeout)
            r["wall"] = time.monotonic() - t0
            r["rc"] = res.returncode
            r["timed_out"] = res.timed_out
            err = res.stderr.decode("utf-8", "replace")
            r["stderr_tail"] = err[-2000:]
            r["v"] = util.parse_verbose(res.stderr)
            try:
                with open(os.path.join(tmp, "user.json")) as fh:
                    r["user"] = json.load(fh)
            except OSError:
                r["user"] = None
            r["rl"] = h.ratelimit()
            chk = util.LogCheck(h.logs(), args.lines)
            r["log"] = {"missing": len(chk.missing), "dups": chk.dup_lines,
                        "ordered": chk.ordered, "max_batch": chk.max_batch,
                        "ambiguous": r["v"].get("ambiguous", 0)}
            r["outputs"] = check_outputs(h, outdir, args.outputs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return r


def check_outputs(h, outdir, n):
    """Every out-NNNN.bin registered once and stored byte-exact."""
    files = {f["name"]: f for f in h.files()}
    regs = [o for o in h.outputs() if o.get("objectType", "File") == "File"]
    reg_ids = [o["objectId"] for o in regs]
    want = ["out-%04d.bin" % i for i in range(n)]
    missing, bad = [], []
    for name in want:
        f = files.get(name)
        if not f or not f.get("complete", True):
            missing.append(name)
            continue
        path = os.path.join(outdir, name)
        if os.path.exists(path):
            with open(path, "rb") as fh:
                if hashlib.sha256(fh.read()).hexdigest() != f.get("sha256"):
                    bad.append(name)
        if reg_ids.count(f["id"]) != 1:
            bad.append(name + " (registered %d times)" % reg_ids.count(f["id"]))
    return {"missing": missing, "bad": bad, "registered": len(set(reg_ids))}


def report(args, r):
    rl = r["rl"]["clients"]
    agent, user = rl.get("agent", {}), rl.get("user", {})
    budget_n = None if r["budget"] == "off" else args.limit * int(r["budget"].rstrip("%")) // 100
    print("--api-budget %s: agent wall %.1f s, exit %s%s" %
          (r["budget"], r["wall"], r["rc"], " (TIMED OUT)" if r["timed_out"] else ""))
    u = r["user"] or {}
    print("  user's calls: %s requests, %s got 429 (simulator: %s of %s), %s other errors" %
          (u.get("requests", "?"), u.get("limited", "?"), user.get("limited", "?"),
           user.get("requests", "?"), u.get("errors", "?")))
    print("  agent: %s requests, %s got 429; most in any %g s window %s (budget %s of %d)" %
          (agent.get("requests", "?"), agent.get("limited", "?"), args.window,
           agent.get("maxInWindow", "?"), budget_n if budget_n is not None else "none",
           args.limit))
    wins = agent.get("windows", [])
    print("  agent requests per window: %s" %
          " ".join("%d%s" % (w["requests"], "(%d×429)" % w["limited"] if w["limited"] else "")
                   for w in wins))
    lg, out = r["log"], r["outputs"]
    print("  logs: %d lines, %d missing, %d duplicate copies (%d possible duplicate tries), "
          "ordered=%s, largest batch %d; outputs: %d registered, %d missing, %d bad" %
          (args.lines, lg["missing"], lg["dups"], lg["ambiguous"], lg["ordered"],
           lg["max_batch"], out["registered"], len(out["missing"]), len(out["bad"])))
    lost = (lg["missing"] or not lg["ordered"] or out["missing"] or out["bad"] or r["rc"] != 0
            or lg["dups"] > lg["ambiguous"] * max(lg["max_batch"], 1))
    if lost:
        print("  FAIL: something was lost or broken; stderr tail:\n" + r["stderr_tail"])
    return not lost


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--budget", default="20%")
    ap.add_argument("--lines", type=int, default=100000)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--outputs", type=int, default=300)
    ap.add_argument("--out-pause", type=float, default=0.05)
    ap.add_argument("--user-ms", type=int, default=500)
    ap.add_argument("--tail", type=float, default=5.0, help="seconds the user's code runs on")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--quick", action="store_true", help="30 outputs, 20,000 lines")
    ap.add_argument("--only", choices=["on", "off"])
    args = ap.parse_args()
    if args.quick:
        args.outputs, args.lines = 30, 20000
    for p in (AGENT, FLOOD):
        if not os.path.exists(p):
            sys.exit("bench_ratelimit: %s is not built (make all tools)" % p)
    budget = args.budget if args.budget.endswith("%") else args.budget + "%"
    print("rate limit %d per %g s; log flood %d lines at %d/s; %d outputs; the user's code "
          "every %d ms" % (args.limit, args.window, args.lines, args.rate, args.outputs,
                           args.user_ms))
    ok = True
    cases = [budget, "off"] if not args.only else [budget if args.only == "on" else "off"]
    for b in cases:
        ok = report(args, run_case(args, b)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
