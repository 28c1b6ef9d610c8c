#!/usr/bin/env python3
"""test_examples.py: each example under build/civis-agent against the simulator
(its script, not the Docker build): the lines arrived with the right levels and
in order, the outputs were uploaded and registered with the SHA-256 of the
files the job wrote, the exit status is the job's. Plus the static checks of
the examples' Dockerfiles and of the Kubernetes manifest. Prints
"N passed, N failed" and exits 1 when any failed.

    python3 examples/test_examples.py [-v]"""
import gzip
import hashlib
import io
import os
import re
import sys
import tarfile
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import exrun  # noqa: E402
from exrun import HERE, ROOT, SimHarness, check_dockerfile  # noqa: E402

VERBOSE = "-v" in sys.argv


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def sha256_file(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def assert_lines(run, want):
    """want: [(level, message)]; each stream's lines (level info: stdout, error:
    stderr) must appear in the log in that order (createdAt), other lines (the
    agent's) may sit between. Across the two streams the order is only what the
    agent saw reading two pipes: lines written microseconds apart to stdout and
    stderr may swap, so cross-stream order is checked separately, where the job
    leaves time between them."""
    got = [(m["level"], m["message"]) for m in run.logs]
    for level in sorted({lv for lv, _ in want}):
        w = [x for x in want if x[0] == level]
        i = 0
        for item in got:
            if i < len(w) and item == w[i]:
                i += 1
        check(i == len(w), "%s lines: missing or out of order from %r;\ngot %r"
              % (level, w[i:], got))


def registered(run):
    """{name: file record} of the files registered as outputs of this run."""
    out = {}
    for o in run.outputs:
        check(o["objectType"] == "File", "output of type %r" % o["objectType"])
        f = run.files.get(o["objectId"])
        check(f is not None, "output %r names no file" % o)
        check(f["complete"], "output file %s not completely uploaded" % f["name"])
        check(f["name"] not in out, "%s registered twice" % f["name"])
        out[f["name"]] = f
    return out


def assert_file(h, f, path):
    want = sha256_file(path)
    check(f["sha256"] == want, "%s: simulator holds sha256 %s, the job wrote %s"
          % (f["name"], f["sha256"], want))
    data = h.file_data(f["id"])
    check(hashlib.sha256(data).hexdigest() == want, "%s: stored bytes differ" % f["name"])


def hello_lines():
    return [("info", "hello from job 11, run 22"), ("error", "this line goes to stderr"),
            ("info", "step 1 of 3"), ("info", "step 2 of 3"), ("info", "step 3 of 3"),
            ("info", "wrote 23 bytes to hello.csv")]


# ------------------------------------------------------------------ tests

def test_hello(h):
    run = exrun.run_example(h, "hello")
    try:
        check(run.result.returncode == 0, "exit %r: %r" % (run.result.returncode, run.result))
        assert_lines(run, hello_lines())
        outs = registered(run)
        check(set(outs) == {"hello.csv"}, "outputs %r" % sorted(outs))
        assert_file(h, outs["hello.csv"], os.path.join(run.outdir, "hello.csv"))
        return "%d lines, hello.csv %s..." % (len(run.logs), outs["hello.csv"]["sha256"][:12])
    finally:
        run.cleanup()


def test_hello_exit_status(h):
    run = exrun.run_example(h, "hello", extra_env={"HELLO_EXIT": "4"})
    try:
        check(run.result.returncode == 4, "exit %r, want 4" % run.result.returncode)
        assert_lines(run, hello_lines())
        outs = registered(run)
        check(set(outs) == {"hello.csv"}, "a failed job's outputs still go up: %r" % sorted(outs))
        assert_file(h, outs["hello.csv"], os.path.join(run.outdir, "hello.csv"))
        return "exit 4 passed through, hello.csv registered"
    finally:
        run.cleanup()


def test_python(h):
    run = exrun.run_example(h, "python")
    try:
        check(run.result.returncode == 0, "exit %r: %r" % (run.result.returncode, run.result))
        assert_lines(run, [
            ("info", "signups: simulating 30 days for 3 regions"),
            ("info", "progress: north done (1/3)"),
            ("info", "signups: north: total 3052, mean 101.73, max 119"),
            ("error", "signups: north was below the target of 95 on 7 days"),
            ("info", "progress: south done (2/3)"),
            ("info", "signups: south: total 3349, mean 111.63, max 137"),
            ("error", "signups: south was below the target of 95 on 2 days"),
            ("info", "progress: west done (3/3)"),
            ("info", "signups: west: total 3644, mean 121.47, max 140"),
            ("info", "signups: wrote summary.csv and reports/ (3 files) to %s" % run.outdir)])
        outs = registered(run)
        check(set(outs) == {"summary.csv", "reports.tar.gz"}, "outputs %r" % sorted(outs))
        assert_file(h, outs["summary.csv"], os.path.join(run.outdir, "summary.csv"))
        f = outs["reports.tar.gz"]
        data = h.file_data(f["id"])
        check(hashlib.sha256(data).hexdigest() == f["sha256"], "reports.tar.gz: stored bytes differ")
        check(data[:2] == b"\x1f\x8b", "reports.tar.gz is not gzip")
        gzip.decompress(data)
        members = {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
            for m in t.getmembers():
                check(m.isfile() and not m.name.startswith("/") and ".." not in m.name.split("/"),
                      "odd member %r" % m.name)
                members[m.name.split("/")[-1]] = hashlib.sha256(t.extractfile(m).read()).hexdigest()
        rep = os.path.join(run.outdir, "reports")
        want = {n: sha256_file(os.path.join(rep, n)) for n in os.listdir(rep)}
        check(members == want, "archive members %r, reports/ holds %r" % (members, want))
        return "%d lines, summary.csv + reports.tar.gz (%d members, %d bytes)" % (
            len(run.logs), len(members), len(data))
    finally:
        run.cleanup()


def test_python_unbuffered_matters(h):
    """Why the python example sets PYTHONUNBUFFERED=1: a print()ed line, then 0.3 s
    later a stderr line. Unbuffered, the log has them in that order; buffered
    (a pipe: 8 KiB blocks), the print comes at exit, after the stderr line."""
    job = ("import sys, time; print('printed first'); time.sleep(0.3); "
           "print('stderr second', file=sys.stderr); time.sleep(0.1)")
    order = {}
    for unbuffered in ("1", ""):
        h.reset()
        res = h.run_agent(["--", sys.executable, "-c", job],
                          extra_env={"PYTHONUNBUFFERED": unbuffered})
        check(res.returncode == 0, "exit %r" % res.returncode)
        got = [m["message"] for m in sorted(h.logs(), key=lambda m: m["createdAt"])]
        got = [m for m in got if m in ("printed first", "stderr second")]
        order[unbuffered] = got
    check(order["1"] == ["printed first", "stderr second"], "unbuffered: %r" % order["1"])
    check(order[""] == ["stderr second", "printed first"], "buffered: %r" % order[""])
    return "unbuffered: in order; buffered: the print arrives after the later stderr line"


def test_dockerfiles(h):
    layer = os.path.join(ROOT, "build", "layer", "opt", "civis-agent")
    layer = layer if os.path.isdir(layer) else None
    notes = []
    for name in ("hello", "python"):
        df = exrun.dockerfile_of(name)
        errs = check_dockerfile.check(df, os.path.dirname(df), layer, apt=False)
        check(not errs, "\n".join(errs))
        stages = check_dockerfile.stages_of(df)
        last = list(stages.values())[-1]
        words = [(w, a) for _, w, a in last]
        check(("COPY", "--from=civis-agent /opt/civis-agent /opt/civis-agent") in words,
              "%s: no COPY of the layer" % name)
        check(("ENTRYPOINT", '["/opt/civis-agent/bin/civis-agent", "--"]') in words,
              "%s: ENTRYPOINT is not the agent" % name)
        notes.append(name)
    check(os.access(os.path.join(HERE, "hello", "run.sh"), os.X_OK), "run.sh is not executable")
    env, _ = exrun.image_config("python")
    check(env.get("PYTHONUNBUFFERED") == "1", "python image without PYTHONUNBUFFERED=1")
    return "%s: parse, layer COPY, agent ENTRYPOINT%s" % (
        ", ".join(notes), " (checked against the built layer)" if layer else "")


def test_kubernetes_manifest(h):
    path = os.path.join(HERE, "kubernetes", "job.yaml")
    with open(path) as fh:
        text = fh.read()
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is None:   # no PyYAML: the essentials by pattern
        check(re.search(r"^kind: Job$", text, re.M), "not a Job")
        check(not re.search(r"^\s+command:", text, re.M), "command: would bypass the agent")
        check(re.search(r"secretRef:\s*\n\s+name: civis-agent", text), "no Secret reference")
        return "structure checked by pattern (PyYAML not installed)"
    docs = [d for d in yaml.safe_load_all(text) if d]
    jobs = [d for d in docs if d.get("kind") == "Job"]
    check(len(jobs) == 1 and jobs[0]["apiVersion"] == "batch/v1", "want one batch/v1 Job")
    spec = jobs[0]["spec"]
    pod = spec["template"]["spec"]
    check(pod["restartPolicy"] == "Never" and spec.get("backoffLimit") == 0,
          "one Job, one run: restartPolicy Never and backoffLimit 0")
    (c,) = pod["containers"]
    check("command" not in c, "command: would replace the image's ENTRYPOINT (the agent)")
    check(c.get("args") == ["python", "/app/job.py"], "args %r" % c.get("args"))
    refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
    check(refs == ["civis-agent"], "CIVIS_* from the Secret civis-agent: %r" % refs)
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for k in ("CIVIS_API_ENDPOINT", "CIVIS_AGENT_OUTPUT_DIR", "PYTHONUNBUFFERED"):
        check(k in env, "%s not set" % k)
    check(not [k for k in env if k in ("CIVIS_API_KEY", "CIVIS_JOB_ID", "CIVIS_RUN_ID")],
          "credentials inline instead of from the Secret")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    check(env["CIVIS_AGENT_OUTPUT_DIR"] in mounts, "the output dir is not a volume")
    if c.get("securityContext", {}).get("readOnlyRootFilesystem"):
        check("/tmp" in mounts, "read-only root needs /tmp for the agent's spool")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    agrace = int(env.get("CIVIS_AGENT_GRACE_PERIOD", "10s").rstrip("s"))
    check(grace > agrace, "terminationGracePeriodSeconds %d must exceed the agent's %ds"
          % (grace, agrace))
    return "Job, args only, Secret civis-agent, volumes for /output and /tmp"


TESTS = [test_hello, test_hello_exit_status, test_python, test_python_unbuffered_matters,
         test_dockerfiles,
         test_kubernetes_manifest]


def main():
    agent = os.environ.get("CIVIS_AGENT") or os.path.join(ROOT, "build", "civis-agent")
    if not os.access(agent, os.X_OK):
        print("examples-test: %s missing (make)" % agent)
        return 1
    passed = failed = 0
    with SimHarness() as h:
        for t in TESTS:
            name = t.__name__[len("test_"):]
            try:
                note = t(h)
                passed += 1
                print("ok   %-26s %s" % (name, note))
            except Failed as e:
                failed += 1
                print("FAIL %-26s %s" % (name, e))
            except Exception:
                failed += 1
                print("FAIL %-26s\n%s" % (name, traceback.format_exc()))
        if VERBOSE:
            print(h.sim_log_text()[-4000:])
    print("examples-test: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
