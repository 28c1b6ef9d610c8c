#!/usr/bin/env python3
"""demo.py: run examples/hello and examples/python under civis-agent against the
Civis API simulator, and print what the API received: the run log as the
Civis UI shows it (time, level, message), the heartbeats, the registered
outputs (name, size, SHA-256). `make demo` installs what is missing, builds,
and runs this. The simulator is stopped at the end.

    python3 examples/demo.py [--agent build/civis-agent]"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import exrun  # noqa: E402
from exrun import ROOT, SimHarness  # noqa: E402

HEARTBEAT = "1s"   # the default is 30s; short here so a short demo shows some

EXAMPLES = [
    ("hello", "examples/hello/run.sh", {}),
    ("python", "examples/python/job.py (CIVIS_AGENT_ARCHIVE=reports)", {"EXAMPLE_PACE": "0.7"}),
]


def hms(created_at):
    # "2026-11-27T17:47:19.339526702Z" -> "17:47:19.339"
    t = created_at.split("T", 1)[1].rstrip("Z")
    hh, frac = (t.split(".", 1) + [""])[:2]
    return "%s.%s" % (hh, (frac + "000")[:3])


def size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


def show(run, title):
    res = run.result
    print("== %s: exit %d, %.2f s" % (title, res.returncode, res.wall))
    print("   run log (%d lines):" % len(run.logs))
    for m in run.logs:
        mark = "  [stderr]" if m["level"] == "error" else ""
        print("     %s  %-5s  %s%s" % (hms(m["createdAt"]), m["level"].upper(), m["message"], mark))
    beats = ["+%.1f s" % (b["wall"] - run.t0) for b in run.heartbeats]
    print("   heartbeats (%d): %s" % (len(beats), " ".join(beats) if beats else "none"))
    print("   outputs (%d):" % len(run.outputs))
    for o in run.outputs:
        f = run.files.get(o["objectId"], {})
        print("     %s %d  %-15s %9s  sha256 %s" % (o["objectType"], o["objectId"],
                                                   f.get("name"), size(f.get("size") or 0),
                                                   f.get("sha256")))
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", default=os.path.join(ROOT, "build", "civis-agent"))
    a = ap.parse_args()
    agent = os.path.abspath(a.agent)
    if not os.access(agent, os.X_OK):
        print("demo: %s missing: run make" % agent)
        return 1
    os.environ["CIVIS_AGENT"] = agent
    version = subprocess.run([agent, "--version"], stdout=subprocess.PIPE,
                             text=True).stdout.strip()
    ok = True
    with SimHarness() as h:
        print("%s against the Civis API simulator at %s (job %d, run %d)"
              % (version, h.endpoint, h.job_id, h.run_id))
        print("stdout lines arrive at level info, stderr lines at level error; heartbeat "
              "interval %s for the demo (default 30s)\n" % HEARTBEAT)
        for name, title, extra in EXAMPLES:
            env = dict(extra, CIVIS_AGENT_HEARTBEAT_INTERVAL=HEARTBEAT)
            run = exrun.run_example(h, name, extra_env=env)
            try:
                show(run, title)
                ok = ok and run.result.returncode == 0 and bool(run.outputs)
            finally:
                run.cleanup()
        violations = h.violations()
    print("simulator stopped; %s" % ("no protocol violations recorded" if not violations
                                     else "%d protocol violations: %r" % (len(violations), violations)))
    return 0 if ok and not violations else 1


if __name__ == "__main__":
    t0 = time.monotonic()
    rc = main()
    print("demo: %.1f s" % (time.monotonic() - t0))
    sys.exit(rc)
