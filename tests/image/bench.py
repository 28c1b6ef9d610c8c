#!/usr/bin/env python3
"""bench.py: the container figures of docker/BENCHMARKS.md, with a real engine.

  - the layer's size: the civis-agent image (FROM scratch, /opt/civis-agent
    only) as the engine counts it, and what it adds to a user image;
  - the start-up the agent adds to a `run`: median wall time of
    `ENGINE run --rm` of the same image (the no-libc one, tests/image/job.c
    `sleep 0` as the command) with --entrypoint /job (no agent) and with the
    agent as entrypoint (no CIVIS_* variables: tee only), runs alternated;
  - the agent's peak RSS (VmHWM, from --verbose) inside the container, tee
    only and with the API (the simulator on the host: 1000 lines to the run
    log, heartbeats, one output uploaded and registered).

Builds the images first when missing (engine.build_all: cached, so quick the
second time). CONTAINER_ENGINE as for test_image.py.

    python3 tests/image/bench.py [--runs 31] [--job build/image/job]"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))
sys.path.insert(0, HERE)

from harness import SimHarness  # noqa: E402
import engine as E  # noqa: E402

AGENT = "/opt/civis-agent/bin/civis-agent"


def timed(argv):
    t0 = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit("bench: %s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                         p.stderr.decode()[-500:]))
    return dt, p.stderr.decode("utf-8", "replace")


def vmhwm_kib(stderr):
    for ln in stderr.splitlines():
        if "agent peak RSS (VmHWM):" in ln:
            return int(ln.split("VmHWM):", 1)[1].split()[0])
    raise SystemExit("bench: no VmHWM line in the agent's stderr: %r" % stderr[-500:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=31)
    ap.add_argument("--job", default=os.path.join(ROOT, "build", "image", "job"))
    ap.add_argument("--cache", default=os.path.join(ROOT, "build", "image"))
    a = ap.parse_args()
    eng = E.Engine()
    try:
        eng.check_usable()
        if not all(eng.image_exists(i) for i in [E.LAYER_IMAGE] + list(E.USER_IMAGES.values())):
            E.build_all(eng, a.cache, a.job)
    except E.EngineError as e:
        raise SystemExit("bench: %s" % e)
    img = E.USER_IMAGES["static"]
    layer = eng.image_size(E.LAYER_IMAGE)
    print("image-bench: layer image %s: %d bytes (%.1f MiB, as %s counts it); the no-libc user "
          "image with it: %.1f MiB" % (E.LAYER_IMAGE, layer, layer / 1048576.0, eng.name,
                                      eng.image_size(img) / 1048576.0))

    without = eng.run_argv(img, ["sleep", "0"], opts=["--entrypoint", "/job"])
    with_agent = eng.run_argv(img, ["/job", "sleep", "0"])
    for argv in (without, with_agent):   # warm the engine's caches
        timed(argv)
    t_without, t_with = [], []
    for _ in range(a.runs):
        t_without.append(timed(without)[0])
        t_with.append(timed(with_agent)[0])
    m0, m1 = statistics.median(t_without), statistics.median(t_with)
    q0, q1 = statistics.quantiles(t_without, n=4), statistics.quantiles(t_with, n=4)
    diffs = [b - x for x, b in zip(t_without, t_with)]
    print("image-bench: %s run --rm start-up, median of %d: %.1f ms without the agent "
          "(quartiles %.0f-%.0f), %.1f ms with it, tee only (%.0f-%.0f): %+.1f ms "
          "(median of the paired differences %+.1f ms)"
          % (eng.name, a.runs, m0 * 1e3, q0[0] * 1e3, q0[2] * 1e3, m1 * 1e3, q1[0] * 1e3,
             q1[2] * 1e3, (m1 - m0) * 1e3, statistics.median(diffs) * 1e3))

    _, err = timed(eng.run_argv(img, ["/job", "lines", "/output", "1000", "0"],
                                env={"CIVIS_AGENT_VERBOSE": "1"}))
    tee = vmhwm_kib(err)
    with SimHarness() as h:
        env = {"CIVIS_API_ENDPOINT": h.endpoint, "CIVIS_API_KEY": h.api_key,
               "CIVIS_JOB_ID": str(h.job_id), "CIVIS_RUN_ID": str(h.run_id),
               "CIVIS_AGENT_VERBOSE": "1", "CIVIS_AGENT_HEARTBEAT_INTERVAL": "1s"}
        _, err = timed(eng.run_argv(img, ["/job", "lines", "/output", "1000", "0"], env=env))
        api = vmhwm_kib(err)
        if len(h.outputs()) != 1 or len(h.log_messages()) < 1000:
            raise SystemExit("bench: the API run did not deliver (outputs %r)" % h.outputs())
    print("image-bench: agent peak RSS (VmHWM) in the container: tee only %.1f MiB, with the API "
          "(1000 lines, one output) %.1f MiB" % (tee / 1024.0, api / 1024.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
