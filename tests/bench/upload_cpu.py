#!/usr/bin/env python3
"""upload_cpu.py: CPU (user + sys, getrusage) and wall of `civis-agent upload`
for each agent given, and of one `curl -F` form POST, against the simulator,
in alternating rounds. Less load-sensitive than wall times on a shared box.

    python3 tests/bench/upload_cpu.py BYTES ROUNDS AGENT [AGENT...]"""
import os, sys, time, subprocess, resource, json, statistics
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "sim")); sys.path.insert(0, HERE)
import bench as B, bench_upload as U
U.B = B
from harness import SimHarness
h = SimHarness(sim_args=["--etag", "opaque"]); h.start()
def cpu(f):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN); t0 = time.monotonic(); f(); w = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return w, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
try:
    path = U.sized_file(int(sys.argv[1])); B.warm(path)
    res = {}
    for rep in range(int(sys.argv[2])):
        for agent in sys.argv[3:]:
            h.reset()
            res.setdefault(agent, []).append(cpu(lambda: subprocess.run([agent, "upload", path], env=h.env(), capture_output=True, check=True)))
            assert B.check_upload(h, path, "x")
        h.reset()
        def curlf():
            st, _, body = h.api("POST", "/files/", {"name": "x"}); fp = json.loads(body)
            argv = ["curl", "-s", "-o", "/dev/null"]
            for k, v in fp["uploadFields"].items(): argv += ["--form-string", "%s=%s" % (k, v)]
            subprocess.run(argv + ["-F", "file=@%s" % path, fp["uploadUrl"]], check=True)
        res.setdefault("curl -F", []).append(cpu(curlf))
    for k, v in res.items():
        print("%-40s wall %s user %.2f sys %.2f (medians of %d)" % (k, [round(x[0],2) for x in v], statistics.median(x[1] for x in v), statistics.median(x[2] for x in v), len(v)))
finally:
    h.stop()
