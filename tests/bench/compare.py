#!/usr/bin/env python3
"""compare.py: two (or more) builds of the agent through the same bench
figures, alternating whole sets (A B A B ...) so that the machine's noise
hits both, then one table of medians and ratios.

    python3 tests/bench/compare.py [-r ROUNDS] [-b FIGURES] LABEL=AGENT LABEL=AGENT ...
    e.g. python3 tests/bench/compare.py -r 2 -b startup,tee,flood,upload \\
             old=/work/wt/base/build/civis-agent new=build/civis-agent

Each set is one `tests/bench/bench.py` run (its own simulator, this tree's
tools) with CIVIS_AGENT pointing at the build and BENCH_JSON collecting its
figures; the full log of each set goes to build/bench/compare/LABEL-N.log.
The load average (1 min) is noted at the start and end of every set. The
table gives, per figure, the median over the sets of each build (the set
values in brackets) and the ratio of the last build's median to the first's.
A set with a FAIL (a lost line, a corrupted upload) makes the exit status 1.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "build", "bench", "compare")

# (key in bench.py's NUMS, what it is, format, lower is better)
FIGURES = [
    ("startup_added_ms", "start-up added to `true`, ms (median of 5 round medians)", "%.2f"),
    ("startup_added_min_ms", "start-up added, ms (by the minimum)", "%.2f"),
    ("tee_ratio", "tee 1 GiB: wall agent / `cat | cat`", "%.3f"),
    ("tee_agent_s", "tee 1 GiB: agent wall, s", "%.3f"),
    ("tee_hwm_kb", "tee: agent VmHWM, kB", "%.0f"),
    ("flood_ratio", "flood 1e6 x 100 B: command time agent+API / `| cat`", "%.3f"),
    ("flood_agent_s", "flood: command time under the agent, s", "%.3f"),
    ("flood_pipe_s", "flood: command time `| cat`, s", "%.3f"),
    ("flood_tee_only_ratio", "flood diagnosis: tee only (no API) / `| cat`", "%.3f"),
    ("flood_no_tee_ratio", "flood diagnosis: API, --no-tee / `| cat`", "%.3f"),
    ("flood_agent_cpu_s", "flood: agent CPU (user+sys), s", "%.3f"),
    ("flood_lines_per_request", "flood: lines per log request", "%.0f"),
    ("flood_hwm_kb", "flood: agent VmHWM, kB", "%.0f"),
    ("flood_last_line_s", "flood: last line stored after the exit, s", "%.2f"),
    ("upload_1074MB_ratio_curl_f", "upload 1 GiB: agent / `curl -F`", "%.3f"),
    ("upload_1074MB_agent_s", "upload 1 GiB: agent wall, s", "%.2f"),
    ("upload_1074MB_curl_f_s", "upload 1 GiB: `curl -F` wall, s", "%.2f"),
    ("upload_1074MB_ratio_curl_parallel", "upload 1 GiB: agent / `curl --parallel-max 4`", "%.3f"),
    ("upload_1074MB_hwm_kb", "upload 1 GiB: agent VmHWM, kB", "%.0f"),
    ("upload_300MB_ratio_curl_f", "upload 300 MB: agent / `curl -F` (median of 2)", "%.3f"),
    ("upload_300MB_hwm_kb", "upload 300 MB: agent VmHWM, kB", "%.0f"),
]


def load1():
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def one_set(label, agent, figures, n):
    os.makedirs(OUT, exist_ok=True)
    log = os.path.join(OUT, "%s-%d.log" % (label, n))
    js = os.path.join(OUT, "%s-%d.json" % (label, n))
    env = dict(os.environ, CIVIS_AGENT=agent, BENCH=figures, BENCH_JSON=js)
    env.pop("BENCH_QUICK", None)
    l0, t0 = load1(), time.strftime("%H:%M:%S", time.gmtime())
    with open(log, "w") as fh:
        rc = subprocess.run([sys.executable, os.path.join(HERE, "bench.py")], env=env,
                            stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    l1, t1 = load1(), time.strftime("%H:%M:%S", time.gmtime())
    with open(js) as fh:
        res = json.load(fh)
    res.update(rc=rc, load=(l0, l1), when=(t0, t1), log=log)
    print("  %s set %d: %s-%s UTC, load %.2f -> %.2f, %.0f s, %s" % (
        label, n, t0, t1, l0, l1, res["seconds"], "%d FAIL" % len(res["fails"])
        if res["fails"] else "no FAIL"), flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-r", "--rounds", type=int, default=2)
    ap.add_argument("-b", "--bench", default="startup,tee,flood,upload")
    ap.add_argument("builds", nargs="+", help="LABEL=path to civis-agent")
    a = ap.parse_args()
    builds = []
    for b in a.builds:
        label, _, path = b.partition("=")
        if not path or not os.access(path, os.X_OK):
            sys.exit("compare: %s: give LABEL=path to an executable civis-agent" % b)
        builds.append((label, os.path.abspath(path)))
    sets = {label: [] for label, _ in builds}
    print("compare: %s; %d rounds of %s; logs in %s" % (
        ", ".join("%s=%s" % b for b in builds), a.rounds, a.bench, OUT), flush=True)
    for n in range(1, a.rounds + 1):
        for label, path in builds:
            sets[label].append(one_set(label, path, a.bench, n))
    first, last = builds[0][0], builds[-1][0]
    print()
    print("| figure | " + " | ".join("%s (median; sets)" % lb for lb, _ in builds) +
          " | %s / %s |" % (last, first))
    print("| --- |" + " --- |" * (len(builds) + 1))
    for key, what, fmt in FIGURES:
        vals = {lb: [s["nums"][key] for s in sets[lb] if key in s["nums"]] for lb, _ in builds}
        if not any(vals.values()):
            continue
        cells = []
        for lb, _ in builds:
            v = vals[lb]
            cells.append("%s (%s)" % (fmt % statistics.median(v), ", ".join(fmt % x for x in v))
                         if v else "-")
        ratio = (statistics.median(vals[last]) / statistics.median(vals[first])
                 if vals[first] and vals[last] and statistics.median(vals[first]) else float("nan"))
        print("| %s | %s | %.2f |" % (what, " | ".join(cells), ratio))
    print("| load average (1 min) at start -> end of each set | " + " | ".join(
        ", ".join("%.1f->%.1f" % s["load"] for s in sets[lb]) for lb, _ in builds) + " | |")
    fails = sum(len(s["fails"]) for v in sets.values() for s in v)
    print()
    print("compare: %s" % ("%d FAIL (see the logs)" % fails if fails else "no FAIL"))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
