#!/usr/bin/env python3
"""test_image.py: docker/Dockerfile built by a real container engine, and user
images made from it, run against the API simulator on the host.

The engine is $CONTAINER_ENGINE (default podman, with the settings in
engine.py). Built: the layer image (docker/Dockerfile, default target) and
its bookworm target; three user images, each with
`COPY --from=civis-agent /opt/civis-agent /opt/civis-agent` and the README's
ENTRYPOINT: examples/python/Dockerfile (Debian slim + python3), busybox FROM
scratch (Dockerfile.busybox), and no shell or libc at all, a static binary as
the command (Dockerfile.static, job.c). Each container runs with
--network host (the simulator listens on 127.0.0.1). Checked: exit status,
every line in the run log at its level and in order, outputs uploaded
(same bytes) and registered, heartbeats; `stop -t 5` (SIGTERM to the
command, its last lines and outputs delivered, 143; a command that ignores
SIGTERM SIGKILLed within the agent's --grace-period, before the engine's
own SIGKILL); `kill -s USR1` / `-s HUP` forwarded once each; --user
1000:1000 (spool, subreaper, outputs); --read-only --tmpfs /tmp;
--read-only with nothing writable; --memory 64m and an allocation past it;
CIVIS_AGENT_* options from the engine's environment.

A test the host cannot run (no memory cgroup, say) says "skip" and why; a
missing engine, debootstrap or busybox (what make deps installs) is a
failure. Closes with "image-test: N passed, N failed, N skipped".

    python3 tests/image/test_image.py --job build/image/job [--only NAME...]"""
import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))
sys.path.insert(0, HERE)

from harness import SimHarness  # noqa: E402
import engine as E  # noqa: E402

AGENT = "/opt/civis-agent/bin/civis-agent"
OOM_WORDING = "Process ran out of its allowed %d MiB of memory and was killed."


class Failed(Exception):
    pass


class Skipped(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


class Ctx:
    """What every test gets: the engine, the simulator, the job binary."""

    def __init__(self, eng, h, job, cache):
        self.eng, self.h, self.job, self.cache = eng, h, job, cache
        self.serial = 0

    def env(self, extra=None):
        e = {"CIVIS_API_ENDPOINT": self.h.endpoint, "CIVIS_API_KEY": self.h.api_key,
             "CIVIS_JOB_ID": str(self.h.job_id), "CIVIS_RUN_ID": str(self.h.run_id)}
        e.update(extra or {})
        return e

    def name(self, what):
        self.serial += 1
        return "civis-image-test-%s-%d-%d" % (what, os.getpid(), self.serial)

    def run(self, image, command=(), env=None, opts=(), timeout=120):
        """A container in the foreground: (rc, stdout, stderr, seconds)."""
        argv = self.eng.run_argv(image, command, self.env(env), opts)
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failed("%s did not end in %d s" % (" ".join(argv[-4:]), timeout))
        return (p.returncode, p.stdout.decode("utf-8", "replace"),
                p.stderr.decode("utf-8", "replace"), time.monotonic() - t0)

    def start(self, image, command=(), env=None, opts=(), what="c"):
        """A detached container; its name."""
        name = self.name(what)
        argv = self.eng.run_argv(image, command, self.env(env), opts, name=name, detach=True)
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        check(p.returncode == 0, "%s run -d failed: %s" % (self.eng.name, p.stderr[-1000:]))
        return name

    def wait_exit(self, name, timeout=60):
        _, out, _ = self.eng.call("wait", name, timeout=timeout)
        return int(out.strip().splitlines()[-1])

    def container_logs(self, name):
        _, out, err = self.eng.call("logs", name, timeout=60)
        return out, err

    def wait_message(self, text, timeout=30):
        """Until a run-log message contains text; the messages."""
        end = time.monotonic() + timeout
        while True:
            msgs = self.h.log_messages()
            if any(text in m for m in msgs):
                return msgs
            if time.monotonic() > end:
                raise Failed("no run-log line with %r in %d s; got %r" % (text, timeout, msgs[-20:]))
            time.sleep(0.1)


# ------------------------------------------------------------------ checks

def own_lines(text):
    """The command's lines of a tee'd stream: the agent's own ("civis-agent: ...") left out."""
    return [ln for ln in text.splitlines() if not ln.startswith("civis-agent")]


def check_lines_delivered(h, out, err):
    """Every line the container printed is in the run log, at its stream's level, in order."""
    logs = sorted((m for m in h.logs() if not m["message"].startswith("civis-agent")),
                  key=lambda m: m["createdAt"])
    for level, lines in (("info", own_lines(out)), ("error", own_lines(err))):
        got = [m["message"] for m in logs if m["level"] == level]
        check(got == lines, "%s lines: run log %r, container printed %r" % (level, got, lines))
    return len(logs)


def summary_line(h):
    s = [m for m in h.logs() if m["message"].startswith("civis-agent: command ")]
    check(len(s) == 1, "want one summary line, got %r" % s)
    return s[0]["message"]


def registered_files(h):
    """{name: bytes} of the files registered as outputs, each complete."""
    files = {f["id"]: f for f in h.files()}
    res = {}
    for o in h.outputs():
        check(o["objectType"] == "File", "output %r is not a File" % o)
        f = files.get(o["objectId"])
        check(f is not None and f["complete"], "output %r: file %r not complete" % (o, f))
        data = h.file_data(f["id"])
        check(hashlib.sha256(data).hexdigest() == f["sha256"], "%s: stored bytes differ" % f["name"])
        check(f["name"] not in res, "%s registered twice: %r" % (f["name"], h.outputs()))
        res[f["name"]] = data
    return res


def check_heartbeats(h, least=1):
    n = len(h.heartbeats())
    check(n >= least, "heartbeats: %d, want at least %d" % (n, least))
    return n


# ------------------------------------------------------------------ tests

def test_layer_image(c):
    """docker/Dockerfile: the layer image runs alone (no libc) and the bookworm target works."""
    rc, out, err, _ = c.run(E.LAYER_IMAGE)
    check(rc == 0 and out.startswith("civis-agent "), "layer image: %d %r %r" % (rc, out, err))
    c.h.reset()
    rc, out2, err, _ = c.run(E.BOOKWORM_IMAGE, ["bash", "-c", "echo from bookworm; exit 5"])
    check(rc == 5 and "from bookworm" in out2, "bookworm target: %d %r %r" % (rc, out2, err))
    c.h.wait_for(10, logs=2)
    check("from bookworm" in c.h.log_messages(), "bookworm target's line not in the run log")
    size = c.eng.image_size(E.LAYER_IMAGE)
    return "%s; layer image %.1f MiB; bookworm target: exit 5, line delivered" % (
        out.strip(), size / 1048576.0)


def expected_python_outputs():
    """examples/python/job.py run here: the files it writes (seeded: the same bytes)."""
    tmp = tempfile.mkdtemp(prefix="civis-image-py-")
    try:
        env = dict(os.environ, CIVIS_AGENT_OUTPUT_DIR=tmp, PYTHONUNBUFFERED="1")
        subprocess.run([sys.executable, os.path.join(ROOT, "examples", "python", "job.py")],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        res = {}
        for dp, _, fs in os.walk(tmp):
            for f in fs:
                with open(os.path.join(dp, f), "rb") as fh:
                    res[os.path.relpath(os.path.join(dp, f), tmp)] = fh.read()
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_python_example(c):
    c.h.reset()
    rc, out, err, wall = c.run(E.USER_IMAGES["python"], env={
        "EXAMPLE_PACE": "1", "CIVIS_AGENT_HEARTBEAT_INTERVAL": "1s"})
    check(rc == 0, "exit %d: %s" % (rc, err[-1500:]))
    n = check_lines_delivered(c.h, out, err)
    check(any(m["level"] == "error" for m in c.h.logs()), "no warning line at level error")
    files = registered_files(c.h)
    want = expected_python_outputs()
    check(sorted(files) == ["reports.tar.gz", "summary.csv"], "outputs: %r" % sorted(files))
    check(files["summary.csv"] == want["summary.csv"], "summary.csv differs from job.py's")
    with tarfile.open(fileobj=io.BytesIO(files["reports.tar.gz"])) as t:
        got = {m.name.split("/", 1)[-1]: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    wantr = {k.split("/", 1)[1]: v for k, v in want.items() if k.startswith("reports/")}
    check(got == wantr, "reports.tar.gz holds %r, want %r" % (sorted(got), sorted(wantr)))
    hb = check_heartbeats(c.h, 2)
    c.h.assert_no_violations()
    return "exit 0 in %.1f s, %d lines, summary.csv + reports.tar.gz (%d files), %d heartbeats" % (
        wall, n, len(got), hb)


BUSYBOX_JOB = r"""
echo "busybox job in a scratch image"
echo "to stderr" >&2
i=1; while [ $i -le 20 ]; do echo "line $i"; i=$((i+1)); done
printf 'a,b\n1,2\n' > /output/result.csv
sleep 2.5
echo "last line"
exit 3
"""


def test_busybox_image(c):
    c.h.reset()
    rc, out, err, wall = c.run(E.USER_IMAGES["busybox"], ["sh", "-c", BUSYBOX_JOB],
                               env={"CIVIS_AGENT_HEARTBEAT_INTERVAL": "1s"})
    check(rc == 3, "exit %d, want 3: %s" % (rc, err[-1500:]))
    n = check_lines_delivered(c.h, out, err)
    check(n == 23, "%d lines, want 23" % n)
    files = registered_files(c.h)
    check(files == {"result.csv": b"a,b\n1,2\n"}, "outputs: %r" % files)
    check("exited with status 3" in summary_line(c.h), summary_line(c.h))
    hb = check_heartbeats(c.h, 1)
    c.h.assert_no_violations()
    return "exit 3 in %.1f s, %d lines, result.csv, %d heartbeats" % (wall, n, hb)


def test_static_image(c):
    """No shell, no libc: the command is a static binary."""
    c.h.reset()
    rc, out, err, _ = c.run(E.USER_IMAGES["static"])   # the image's own ENTRYPOINT and CMD
    check(rc == 0, "the image's CMD: exit %d: %s" % (rc, err[-1500:]))
    check(check_lines_delivered(c.h, out, err) == 8, "CMD: lines %r" % c.h.log_messages())
    c.h.reset()
    rc, out, err, wall = c.run(E.USER_IMAGES["static"], ["/job", "lines", "/output", "100", "4"])
    check(rc == 4, "exit %d, want 4: %s" % (rc, err[-1500:]))
    n = check_lines_delivered(c.h, out, err)
    check(n == 103, "%d lines, want 103" % n)
    check(registered_files(c.h) == {"result.txt": b"static result\n"}, "outputs: %r" % c.h.outputs())
    c.h.reset()
    rc, out, err, _ = c.run(E.USER_IMAGES["static"], ["/job", "sleep", "2500"],
                            env={"CIVIS_AGENT_HEARTBEAT_INTERVAL": "1s"})
    check(rc == 0, "sleep job: exit %d (%s)" % (rc, err[-500:]))
    hb = check_heartbeats(c.h, 2)
    return "its CMD: exit 0, 8 lines; exit 4 in %.1f s, %d lines, result.txt; %d heartbeats in 2.5 s" % (
        wall, n, hb)


def test_stop_sigterm(c):
    """`stop -t 5`: SIGTERM reaches the command, its last lines and output arrive, 143."""
    c.h.reset()
    name = c.start(E.USER_IMAGES["static"], ["/job", "term", "/output"], what="stop")
    try:
        c.wait_message("term job: ready")
        t0 = time.monotonic()
        c.eng.call("stop", "-t", "5", name, timeout=60)
        took = time.monotonic() - t0
        rc = c.wait_exit(name)
        out, err = c.container_logs(name)
    finally:
        c.eng.remove(name)
    check(rc == 143, "exit %d, want 143; %s" % (rc, err[-1000:]))
    check(took < 5, "stop took %.1f s: the engine had to SIGKILL" % took)
    msgs = c.h.log_messages()
    for want in ("term job: got SIGTERM, writing last.txt", "term job: last line"):
        check(want in msgs, "%r not in the run log: %r" % (want, msgs))
    check("killed by signal 15" in summary_line(c.h), summary_line(c.h))
    check(registered_files(c.h) == {"last.txt": b"written after SIGTERM\n"}, "outputs: %r" % c.h.outputs())
    return "exit 143 after %.1f s, last lines and last.txt delivered" % took


def test_stop_sigterm_ignored(c):
    """A command that ignores SIGTERM: the agent SIGKILLs it before --grace-period
    (3 s, under the engine's 5) is over, and delivers everything in time."""
    c.h.reset()
    name = c.start(E.USER_IMAGES["static"], ["/job", "ignore-term"],
                   env={"CIVIS_AGENT_GRACE_PERIOD": "3s"}, what="ignore")
    try:
        c.wait_message("ignore job: tick 2")
        t0 = time.monotonic()
        c.eng.call("stop", "-t", "5", name, timeout=60)
        took = time.monotonic() - t0
        rc = c.wait_exit(name)
        out, err = c.container_logs(name)
    finally:
        c.eng.remove(name)
    check(took < 4.5, "stop took %.1f s: the agent did not finish within its 3 s grace" % took)
    check(rc == 137, "exit %d, want 137 (command SIGKILLed); %s" % (rc, err[-800:]))
    check("killed by signal 9" in summary_line(c.h), summary_line(c.h))
    ticks = [ln for ln in own_lines(out) if ln.startswith("ignore job: tick")]
    msgs = c.h.log_messages()
    check(ticks and ticks[-1] in msgs, "last tick %r not delivered" % ticks[-1:])
    check(any("outlived the grace period" in m for m in msgs), "no SIGKILL note: %r" % msgs[-5:])
    return "stopped in %.1f s (grace 3 s < engine's 5 s), exit 137, %d ticks all delivered" % (
        took, len(ticks))


def test_stop_default_timeouts(c):
    """The defaults together: `stop` (the engine's 10 s) and --grace-period 10s. The
    agent SIGKILLs a command that ignores SIGTERM 1 s early, and its summary and
    the command's last lines are delivered before the engine's SIGKILL."""
    c.h.reset()
    name = c.start(E.USER_IMAGES["static"], ["/job", "ignore-term"], what="stop10")
    try:
        c.wait_message("ignore job: tick 2")
        t0 = time.monotonic()
        c.eng.call("stop", name, timeout=60)
        took = time.monotonic() - t0
        rc = c.wait_exit(name)
        out, _ = c.container_logs(name)
    finally:
        c.eng.remove(name)
    check(rc == 137 and "killed by signal 9" in summary_line(c.h),
          "exit %d; summary %r" % (rc, [m for m in c.h.log_messages() if "command" in m]))
    # the summary (made after the agent's SIGKILL at 9 s) in the run log is
    # the proof that it came before the engine's; the time is only reported
    # (a loaded machine may take the agent past 10 s to exit)
    ticks = [ln for ln in own_lines(out) if ln.startswith("ignore job: tick")]
    check(ticks and ticks[-1] in c.h.log_messages(), "last tick %r not delivered" % ticks[-1:])
    return "stopped in %.1f s of the engine's 10, exit 137, summary and %d ticks delivered" % (
        took, len(ticks))


def test_kill_usr1_hup(c):
    c.h.reset()
    name = c.start(E.USER_IMAGES["static"], ["/job", "signals"], what="kill")
    try:
        c.wait_message("signals job: ready")
        c.eng.call("kill", "-s", "USR1", name)
        c.wait_message("got SIGUSR1 (1)")
        c.eng.call("kill", "-s", "HUP", name)
        c.wait_message("got SIGHUP (1)")
        rc = c.wait_exit(name)
    finally:
        c.eng.remove(name)
    msgs = c.h.log_messages()
    check(rc == 0, "exit %d; %r" % (rc, msgs[-5:]))
    check("signals job: done: USR1 1, HUP 1" in msgs, "counts: %r" % msgs)
    return "USR1 and HUP forwarded once each, exit 0"


FLOOD = ("i=0; while [ $i -lt %d ]; do echo \"flood line $i with some padding to make it longer, "
         "and longer still\"; i=$((i+1)); done")
NFLOOD = 30000   # ~2.4 MB of lines, ~5 MB of JSON: past a 1 MiB --log-memory-max


def spool_run(c, opts, env, job, what):
    """A run of the busybox image whose log goes to the spool: the API refuses
    for 3 s while the job writes more than --log-memory-max. (rc, out, err)."""
    c.h.reset()
    c.h.set_faults([{"action": "refuse", "seconds": 3, "count": 1}])
    e = {"CIVIS_AGENT_LOG_MEMORY_MAX": "1M", "CIVIS_AGENT_VERBOSE": "1"}
    e.update(env)
    rc, out, err, _ = c.run(E.USER_IMAGES["busybox"], ["sh", "-c", job], env=e, opts=opts)
    return rc, out, err


def spool_bytes(err):
    for ln in err.splitlines():
        if "civis-agent: delivery:" in ln and "spool " in ln:
            return int(ln.rsplit("spool ", 1)[1].split()[0])
    raise Failed("no delivery line in stderr: %r" % err[-800:])


def test_user_1000(c):
    """--user 1000:1000: spool in /tmp, the subreaper's reaping, outputs."""
    job = ("echo uid=$(id -u) gid=$(id -g); (sleep 0.3; echo orphan done) & sleep 1; "
           "echo zombies=$(grep -l zombie /proc/[0-9]*/status 2>/dev/null | wc -l); "
           + FLOOD % NFLOOD + "; echo u > /output/u.txt; sleep 4")
    rc, out, err = spool_run(c, ["--user", "1000:1000"], {}, job, "user")
    check(rc == 0, "exit %d: %s" % (rc, err[-1200:]))
    msgs = c.h.log_messages()
    check("uid=1000 gid=1000" in msgs, "not uid 1000: %r" % msgs[:3])
    check("orphan done" in msgs and "zombies=0" in msgs,
          "orphan/zombies: %r" % [m for m in msgs if "orphan" in m or "zombie" in m])
    flood = [m for m in msgs if m.startswith("flood line ")]
    check(len(flood) == NFLOOD, "%d flood lines of %d" % (len(flood), NFLOOD))
    sp = spool_bytes(err)
    check(sp > 0, "the spool was not used (spool 0 bytes)")
    check(registered_files(c.h) == {"u.txt": b"u\n"}, "outputs: %r" % c.h.outputs())
    return "uid 1000: orphan reaped (0 zombies), %d lines through a %d-byte spool, u.txt" % (NFLOOD, sp)


def test_read_only_tmpfs(c):
    """--read-only --tmpfs /tmp: spool and outputs in /tmp."""
    job = "mkdir -p /tmp/out; " + FLOOD % NFLOOD + "; echo r > /tmp/out/r.txt; sleep 4"
    rc, out, err = spool_run(c, ["--read-only", "--tmpfs", "/tmp"],
                             {"CIVIS_AGENT_OUTPUT_DIR": "/tmp/out"}, job, "ro")
    check(rc == 0, "exit %d: %s" % (rc, err[-1200:]))
    flood = [m for m in c.h.log_messages() if m.startswith("flood line ")]
    check(len(flood) == NFLOOD, "%d flood lines of %d" % (len(flood), NFLOOD))
    sp = spool_bytes(err)
    check(sp > 0, "the spool was not used")
    check(registered_files(c.h) == {"r.txt": b"r\n"}, "outputs: %r" % c.h.outputs())
    return "%d lines through a %d-byte spool in the tmpfs, r.txt" % (NFLOOD, sp)


def test_read_only_nothing_writable(c):
    """--read-only and no writable directory: memory queue only, one clear note,
    nothing lost while the API is up."""
    opts = ["--read-only"] + (["--read-only-tmpfs=false"] if c.eng.podman else [])
    c.h.reset()
    job = "touch /tmp/x 2>/dev/null && echo writable || echo read-only; " + FLOOD % NFLOOD
    rc, out, err, _ = c.run(E.USER_IMAGES["busybox"], ["sh", "-c", job],
                            env={"CIVIS_AGENT_LOG_MEMORY_MAX": "1M",
                                 "CIVIS_AGENT_VERBOSE": "1"},
                            opts=opts)
    check(rc == 0, "exit %d: %s" % (rc, err[-1200:]))
    check(own_lines(out)[:1] == ["read-only"], "/tmp is writable: %r" % own_lines(out)[:1])
    msgs = c.h.log_messages()
    flood = [m for m in msgs if m.startswith("flood line ")]
    check(len(flood) == NFLOOD, "%d flood lines of %d delivered" % (len(flood), NFLOOD))
    # -v's closing figures (the delivery line's "spool 0 bytes") are not notes
    notes = [ln for ln in err.splitlines() if ln.startswith("civis-agent:") and
             not ln.startswith("civis-agent: delivery:")]
    about = [ln for ln in notes if "/tmp" in ln or "spool" in ln or "backlog" in ln]
    check(len(about) == 1, "want one note about the unwritable /tmp, got %r" % about)
    check("memory" in about[0], "the note does not say the log stays in memory: %r" % about[0])
    return "%d lines delivered, one note: %s" % (NFLOOD, about[0])


def test_memory_limit(c):
    """--memory 64m and a command allocating past it: the agent survives, names the
    out-of-memory kill (the platform's wording) and delivers everything."""
    c.h.reset()
    rc, out, err, _ = c.run(E.USER_IMAGES["static"], ["/job", "alloc", "256"],
                            opts=["--memory", "64m", "--memory-swap", "64m"])
    if rc == 0 and "no limit hit" in out:
        raise Skipped("the engine's --memory is not enforced on this host (256 MiB touched)")
    check(rc == 137, "exit %d, want 137: %s" % (rc, err[-800:]))
    lines = own_lines(out)
    msgs = c.h.log_messages()
    check(lines and all(ln in msgs for ln in lines), "lines lost: %r" % lines[-3:])
    wording = OOM_WORDING % 64
    s = summary_line(c.h)
    check(wording in s, "the summary does not name the out-of-memory kill (%r): %s" % (wording, s))
    errs = [m["message"] for m in c.h.logs() if m["level"] == "error" and wording in m["message"]]
    check(errs, "no error line in the run log with %r" % wording)
    return "exit 137 after %s; %r in the summary and as an error line" % (lines[-1], wording)


def test_env_options(c):
    """CIVIS_AGENT_* from `run -e`: levels, exit-code remap, output dir, heartbeat."""
    c.h.reset()
    rc, out, err, _ = c.run(E.USER_IMAGES["busybox"],
                            ["sh", "-c", "echo out; echo err >&2; mkdir -p /tmp/o; echo x > /tmp/o/x.txt; "
                             "sleep 2; exit 7"],
                            env={"CIVIS_AGENT_STDOUT_LEVEL": "warn", "CIVIS_AGENT_STDERR_LEVEL": "fatal",
                                 "CIVIS_AGENT_EXIT_CODE_REMAP": "7", "CIVIS_AGENT_OUTPUT_DIR": "/tmp/o",
                                 "CIVIS_AGENT_HEARTBEAT_INTERVAL": "500ms", "CIVIS_AGENT_NO_TEE": "1"})
    check(rc == 0, "exit %d, want 7 remapped to 0: %s" % (rc, err[-800:]))
    check(own_lines(out) == [] and own_lines(err) == [], "--no-tee: %r %r" % (out, err))
    lv = {m["message"]: m["level"] for m in c.h.logs()}
    check(lv.get("out") == "warn" and lv.get("err") == "fatal", "levels: %r" % lv)
    check(registered_files(c.h) == {"x.txt": b"x\n"}, "outputs: %r" % c.h.outputs())
    hb = check_heartbeats(c.h, 2)
    return "levels warn/fatal, exit 7 -> 0, no tee, /tmp/o uploaded, %d heartbeats at 500 ms" % hb


TESTS = [test_layer_image, test_python_example, test_busybox_image, test_static_image,
         test_stop_sigterm, test_stop_sigterm_ignored, test_stop_default_timeouts, test_kill_usr1_hup, test_user_1000,
         test_read_only_tmpfs, test_read_only_nothing_writable, test_memory_limit, test_env_options]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", default=os.path.join(ROOT, "build", "image", "job"))
    ap.add_argument("--cache", default=os.path.join(ROOT, "build", "image"))
    ap.add_argument("--only", nargs="*", help="test names (without test_)")
    a = ap.parse_args()
    a.job, a.cache = os.path.abspath(a.job), os.path.abspath(a.cache)
    os.makedirs(a.cache, exist_ok=True)
    os.chdir(a.cache)   # conmon leaves a file named "oom" in its working directory
    eng = E.Engine()
    passed = failed = skipped = 0
    try:
        eng.check_usable()
        if not os.path.exists(a.job):
            raise E.EngineError("no static job at %s (make image-test builds it)" % a.job)
        t0 = time.monotonic()
        for what, note in E.build_all(eng, a.cache, a.job).items():
            print("built %-9s %s" % (what, note))
        print("image: all built in %.0f s (%s%s)" % (time.monotonic() - t0, eng.name,
                                                    " " + " ".join(eng.flags) if eng.flags else ""))
    except E.EngineError as e:
        print("FAIL build: %s" % e)
        print("image-test: 0 passed, 1 failed, 0 skipped")
        return 1
    tests = [t for t in TESTS if not a.only or t.__name__[5:] in a.only]
    with SimHarness() as h:
        c = Ctx(eng, h, a.job, a.cache)
        for t in tests:
            name = t.__name__[len("test_"):]
            t0 = time.monotonic()
            try:
                note = t(c)
                passed += 1
                print("ok   %-26s %s (%.1f s)" % (name, note, time.monotonic() - t0))
            except Skipped as e:
                skipped += 1
                print("skip %-26s %s" % (name, e))
            except (Failed, E.EngineError) as e:
                failed += 1
                print("FAIL %-26s %s" % (name, e))
            except Exception:
                failed += 1
                print("FAIL %-26s\n%s" % (name, traceback.format_exc()))
            sys.stdout.flush()
    print("image-test: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
