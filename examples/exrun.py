"""exrun.py: run the examples under the agent against the API simulator.

Shared by examples/test_examples.py (make examples-test) and examples/demo.py
(make demo). Each example runs as its Dockerfile says: its CMD, under
build/civis-agent, with the ENV of its Dockerfile (CIVIS_AGENT_OUTPUT_DIR
moved to a scratch directory), and the CIVIS_* variables pointing at the
simulator."""
import json
import os
import shlex
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))
sys.path.insert(0, os.path.join(ROOT, "docker"))

import check_dockerfile  # noqa: E402
from harness import SimHarness  # noqa: E402,F401  (re-exported)

# What the image runs, mapped to this checkout: the Dockerfile's CMD paths.
CMD_PATHS = {"/app/run.sh": os.path.join(HERE, "hello", "run.sh"),
             "/app/job.py": os.path.join(HERE, "python", "job.py"),
             "python": sys.executable}


def dockerfile_of(name):
    return os.path.join(HERE, name, "Dockerfile")


def image_config(name):
    """(env dict, cmd list) of the example's final stage."""
    env, cmd = {}, None
    for _, word, args in check_dockerfile.stages_of(dockerfile_of(name)).popitem()[1]:
        if word == "ENV":
            for tok in shlex.split(args):
                k, _, v = tok.partition("=")
                env[k] = v
        elif word == "CMD":
            cmd = json.loads(args)
    return env, cmd


class Run:
    """One example's run: the agent's result and what the API received."""

    def __init__(self, name, result, outdir, logs, heartbeats, outputs, files, t0):
        self.name = name
        self.result = result
        self.outdir = outdir
        self.logs = sorted(logs, key=lambda m: m["createdAt"])   # as the API orders them
        self.heartbeats = heartbeats
        self.outputs = outputs
        self.files = files
        self.t0 = t0

    def cleanup(self):
        shutil.rmtree(self.outdir, ignore_errors=True)


def run_example(h, name, extra_env=None, agent_args=(), timeout=120):
    """Run example `name` under the agent; the simulator is reset first."""
    h.reset()
    env, cmd = image_config(name)
    outdir = tempfile.mkdtemp(prefix="civis-example-%s-" % name)
    env["CIVIS_AGENT_OUTPUT_DIR"] = outdir
    env.update(extra_env or {})
    argv = list(agent_args) + ["--"] + [CMD_PATHS.get(a, a) for a in cmd]
    t0 = time.time()
    res = h.run_agent(argv, extra_env=env, timeout=timeout, cwd=ROOT)
    files = {f["id"]: f for f in h.files()}
    return Run(name, res, outdir, h.logs(), h.heartbeats(), h.outputs(), files, t0)
