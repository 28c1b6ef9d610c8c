#!/usr/bin/env python3
"""flood_ab.py: only the flood figure's command time (1,000,000 x 100 B under
the agent with the API; first write -> exit, by the flood tool's own clock),
for each build given, alternating run by run, with the agent's CPU and VmHWM
from -v and the 1-minute load; the simulator's line count is checked (every
line stored) but not their order (bench.py's flood figure does that).

    python3 tests/bench/flood_ab.py ROUNDS LABEL=AGENT [LABEL=AGENT ...]
    (LABEL="AGENT --flag ..." gives that build its own options, e.g.
    new-nolev="build/civis-agent --no-detect-levels")"""
import os
import shlex
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "sim"))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402
from harness import SimHarness  # noqa: E402


def load1():
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def main():
    rounds = int(sys.argv[1])
    builds = [a.partition("=")[::2] for a in sys.argv[2:]]
    builds = [(lb, shlex.split(spec)) for lb, spec in builds]
    n = 1000000
    tf = os.path.join(B.BDIR, "flood_ab.time")
    os.makedirs(B.BDIR, exist_ok=True)
    h = SimHarness(max_lifetime=3600)
    h.start()
    res = {lb: [] for lb, _ in builds}
    try:
        for i in range(rounds):
            pipe = B.flood_piped(n, tf)
            for lb, argv in builds:
                B.AGENT = os.path.abspath(argv[0])
                ld = load1()
                r = B.flood_under_agent(h, n, tf, argv[1:])
                got = h.state()["logs"]
                if got < n:
                    B.fail("%s: %d of %d lines stored" % (lb, got, n))
                res[lb].append((r["run"], r["v"]["cpu"] or 0, r["v"]["hwm_kb"] or 0, ld, pipe))
                print("round %d %-9s command %.3f s (| cat %.3f s), agent CPU %.3f s, VmHWM %d kB,"
                      " load %.2f" % (i + 1, lb, r["run"], pipe, res[lb][-1][1], res[lb][-1][2], ld),
                      flush=True)
    finally:
        h.stop()
        B._cleanup()
    for lb, _ in builds:
        v = res[lb]
        runs = sorted(x[0] for x in v)
        print("%-9s command median %.3f s (min %.3f, quartiles %.3f..%.3f, max %.3f); CPU median "
              "%.3f s; VmHWM median %d kB; %d runs" % (
                  lb, statistics.median(runs), runs[0], runs[len(runs) // 4],
                  runs[(3 * len(runs)) // 4], runs[-1], statistics.median(x[1] for x in v),
                  statistics.median(x[2] for x in v), len(v)))
    return 1 if B.FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
