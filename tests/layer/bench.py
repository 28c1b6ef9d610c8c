#!/usr/bin/env python3
"""bench.py RUNS LAYER_DIR PLAIN_AGENT: the layer launcher's start-up overhead.

`civis-agent -- true` through LAYER_DIR/bin/civis-agent (static launcher ->
bundled loader -> agent on the bundled libraries) against the same agent
binary started directly by the system's loader on the system's libraries, and
plain `true` for scale. No CIVIS_* variables: the agent runs the command
without the API, so only start-up is measured. build/tools/spawntime gives
median/p90/min in microseconds; the variants are interleaved in 5 rounds of
RUNS/5 runs so that load from elsewhere hits them alike, and the figures are
the median of the round medians, the worst round p90 and the overall min."""
import os
import shutil
import statistics
import subprocess
import sys

ROUNDS = 5


def spawntime(n, argv, env):
    out = subprocess.run(["build/tools/spawntime", str(n)] + argv, env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout.split()
    return [float(x) for x in out]


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: bench.py RUNS LAYER_DIR PLAIN_AGENT")
    runs, layer, plain = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if not os.access("build/tools/spawntime", os.X_OK):
        sys.exit("layer-bench: build/tools/spawntime missing (make tools)")
    true = shutil.which("true")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVIS_")}
    variants = [("true (no agent)", [true]),
                ("agent, system loader + libs", [plain, "--", true]),
                ("agent via layer launcher", [os.path.join(layer, "bin", "civis-agent"), "--", true])]
    per = max(1, runs // ROUNDS)
    res = {name: [] for name, _ in variants}
    for _ in range(ROUNDS):
        for name, argv in variants:
            res[name].append(spawntime(per, argv, env))
    print("layer-bench: start-up of `civis-agent -- true`, %d runs each (%d rounds of %d), "
          "microseconds" % (per * ROUNDS, ROUNDS, per))
    print("  %-30s %9s %9s %9s" % ("", "median", "p90", "min"))
    med = {}
    for name, _ in variants:
        r = res[name]
        med[name] = statistics.median(x[0] for x in r)
        mn = min(x[2] for x in r)
        print("  %-30s %9.0f %9.0f %9.0f" % (name, med[name], max(x[1] for x in r), mn))
        res[name] = (med[name], mn)
    a, b = res["agent, system loader + libs"], res["agent via layer launcher"]
    print("  launcher overhead: %+.0f us median (%+.1f%%), %+.0f us min"
          % (b[0] - a[0], 100.0 * (b[0] - a[0]) / a[0], b[1] - a[1]))
    size = int(subprocess.run(["du", "-sb", layer], check=True, stdout=subprocess.PIPE,
                              text=True).stdout.split()[0])
    print("  layer size: %d bytes (%.1f MiB), %d files in lib/"
          % (size, size / 1048576.0, len(os.listdir(os.path.join(layer, "lib")))))


if __name__ == "__main__":
    main()
