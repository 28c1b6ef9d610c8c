#!/usr/bin/env python3
"""test_layer.py: the assembled base layer in an empty root, as a container runs it.

The root holds only the layer (/opt/civis-agent) and a static busybox as the
user's "image": no libc, no CA bundle, no /etc. It is entered with
`unshare --pid --fork --mount` and `unshare --root --mount-proc`, so the
agent runs as PID 1 of a new PID namespace, chrooted, with /proc mounted and
/dev/null bound in as Docker provides them. The network namespace is shared,
so 127.0.0.1 reaches the simulator (tests/sim). Checked:
  - the command's stdout and stderr lines arrive in the run log (levels info/error);
  - a file left in --output-dir is uploaded (same SHA-256) and registered;
  - the command's exit status (3) is the agent's;
  - the agent is PID 1 and the command sees exactly the container's environment
    (nothing added by the launcher: no LD_LIBRARY_PATH, no LD_*);
  - the launcher finds its prefix from /proc/self/exe (layer moved elsewhere)
    and falls back to /opt/civis-agent without /proc;
  - the layer's agent, run by its bundled loader, resolves no library outside
    the layer (ld.so --list in the chroot);
  - TLS: through a local TLS proxy in front of the simulator, with a throwaway
    CA, the agent trusts the layer's own bundle (found beside the bundled
    loader), prefers the image's /etc/ssl/certs/ca-certificates.crt to it, and
    takes SSL_CERT_FILE; with none holding the CA, verification fails;
  - the Dockerfile parses, and its build stage, replayed on a copy of the
    context, gives the same tree as `make layer`;
  - every library of libarchive's static link (pkg-config --static) has its
    -dev package in make deps and in the Dockerfile's build stage.
Needs root (or unprivileged user namespaces: then `unshare --user
--map-root-user` comes first, and the unprivileged-user test is skipped),
unshare (util-linux), /bin/busybox (busybox-static) and openssl. Prints "N passed, N failed" and the layer's size.

    python3 tests/layer/test_layer.py --layer build/layer/opt/civis-agent"""
import argparse
import hashlib
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))

sys.path.insert(0, os.path.join(ROOT, "docker"))

from harness import SimHarness  # noqa: E402
import check_dockerfile  # noqa: E402

PREFIX = "/opt/civis-agent"
LAYER = None   # the assembled layer (--layer)
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
MOUNT = shutil.which("mount") or "/usr/bin/mount"
HOST_SH = "/bin/sh"

# The user's job, run by busybox sh inside the root.
JOB = r"""
echo "hello from busybox in an empty root"
echo "to stderr" >&2
echo "pid of the agent: $(cat /proc/1/comm 2>/dev/null) pid1=$(readlink /proc/1/exe)"
i=1; while [ $i -le 5 ]; do echo "line $i"; i=$((i+1)); done
printf 'a,b\n1,2\n' > /output/result.csv
env > /tmp/child-env
exit 3
"""


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def build_root(layer, where):
    """root/ with the layer, busybox and its applet links, empty /proc /dev /tmp /output."""
    root = os.path.join(where, "root")
    os.makedirs(os.path.dirname(os.path.join(root, PREFIX.lstrip("/"))))
    shutil.copytree(layer, os.path.join(root, PREFIX.lstrip("/")), symlinks=True)
    for d in ("bin", "proc", "dev", "tmp", "output"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    shutil.copy2("/bin/busybox", os.path.join(root, "bin", "busybox"))
    for applet in ("sh", "cat", "env", "echo", "printf", "readlink", "ls", "true", "sleep", "id"):
        os.symlink("busybox", os.path.join(root, "bin", applet))
    open(os.path.join(root, "dev", "null"), "w").close()   # bind-mount target
    return root


def container_env(h, extra=None):
    """A container's environment: nothing from the host but what a runtime sets."""
    e = {"PATH": "/bin", "HOME": "/", "HOSTNAME": "civis-layer-test",
         "CIVIS_API_ENDPOINT": h.endpoint, "CIVIS_API_KEY": h.api_key,
         "CIVIS_JOB_ID": str(h.job_id), "CIVIS_RUN_ID": str(h.run_id),
         "LAYER_TEST_MARK": "untouched value with spaces"}
    e.update(extra or {})
    return e


def in_root(root, argv, proc=True, uid=None):
    """argv (inside root) as PID 1 of a new PID + mount namespace, chrooted;
    as uid:uid when given (what runAsUser does)."""
    inner = [UNSHARE, "--root=" + root] + (["--mount-proc"] if proc else []) + \
        (["--setuid", str(uid), "--setgid", str(uid)] if uid is not None else []) + argv
    script = ('set -e; %s --bind /dev/null "$1/dev/null"; shift; exec "$@"' % MOUNT)
    userns = ["--user", "--map-root-user"] if os.geteuid() != 0 else []
    return [UNSHARE] + userns + ["--pid", "--fork", "--mount", "--propagation", "private", "--",
            HOST_SH, "-c", script, "sh", root] + inner


def run(argv, env, timeout=60):
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


# ------------------------------------------------------------------ tests

def test_job_in_empty_root(h, root):
    h.reset()
    env = container_env(h)
    t0 = time.monotonic()
    rc, out, err = run(in_root(root, [PREFIX + "/bin/civis-agent", "--output-dir", "/output",
                                      "--", "/bin/sh", "-c", JOB]), env)
    wall = time.monotonic() - t0
    check(rc == 3, "exit status %r, want 3; stderr: %s" % (rc, err[-2000:]))
    check("hello from busybox in an empty root" in out, "stdout not teed: %r" % out[-500:])
    check("to stderr" in err, "stderr not teed: %r" % err[-500:])
    logs = h.logs()
    msgs = {m["message"]: m["level"] for m in logs}
    for want in ["hello from busybox in an empty root"] + ["line %d" % i for i in range(1, 6)]:
        check(msgs.get(want) == "info", "log line %r missing or not info: %r" % (want, logs))
    check(msgs.get("to stderr") == "error", "stderr line not at level error: %r" % logs)
    pid1 = [m for m in msgs if m.startswith("pid of the agent:")]
    check(pid1 and ("pid1=" + PREFIX + "/lib/ld-linux") in pid1[0],
          "PID 1 is not the layer's loader running the agent: %r" % pid1)
    want = hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    outs = h.outputs()
    files = {f["id"]: f for f in h.files()}
    check(len(outs) == 1 and outs[0]["objectType"] == "File", "outputs: %r" % outs)
    f = files.get(outs[0]["objectId"])
    check(f is not None and f["name"] == "result.csv" and f["complete"], "file: %r" % f)
    check(f["sha256"] == want and f["size"] == 8, "uploaded %r, want sha256 %s" % (f, want))
    check(hashlib.sha256(h.file_data(f["id"])).hexdigest() == want, "stored bytes differ")
    h.assert_no_violations()
    return "exit 3, %d log lines, result.csv registered (%s...), %.2f s" % (len(logs), want[:12], wall)


def test_child_environment_untouched(h, root):
    path = os.path.join(root, "tmp", "child-env")
    check(os.path.exists(path), "the job did not write its environment")
    with open(path) as fh:
        child = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
    env = container_env(h)
    for k, v in env.items():
        check(child.get(k) == v, "child sees %s=%r, container has %r" % (k, child.get(k), v))
    # busybox sh sets PWD and SHLVL; the agent adds exactly its job API's
    # socket and the CIVIS_OUTPUT file (README: the job API), both its own
    ours = {"CIVIS_AGENT_SOCKET", "CIVIS_OUTPUT"}
    extra = sorted(set(child) - set(env) - {"PWD", "SHLVL"} - ours)
    check(not [k for k in child if k.startswith("LD_")], "LD_* in the child: %r" % child)
    check(not extra, "variables added to the child's environment: %r" % extra)
    check(all(k in child for k in ours), "the job API's variables are missing: %r" % child)
    check(child["CIVIS_OUTPUT"].startswith("/tmp/civis-output.") and
          child["CIVIS_AGENT_SOCKET"].startswith(("/tmp/civis-agent.", "@civis-agent.")),
          "unexpected job API paths: %r %r" % (child["CIVIS_OUTPUT"], child["CIVIS_AGENT_SOCKET"]))
    return "%d variables, identical to the container's, plus %s" % (len(env), ", ".join(sorted(ours)))


def test_no_library_from_outside(h, root):
    # the bundled loader lists what the agent would map, inside the empty root
    rc, out, err = run(in_root(root, [PREFIX + "/lib/ld-linux-x86-64.so.2", "--library-path",
                                      PREFIX + "/lib", "--list", PREFIX + "/libexec/civis-agent"]),
                       {"PATH": "/bin"})
    check(rc == 0, "ld.so --list failed (%d): %s %s" % (rc, out, err))
    libs = [ln.split("=>")[1].split("(")[0].strip() for ln in out.splitlines() if "=>" in ln]
    check(libs, "no libraries listed: %r" % out)
    outside = [p for p in libs if not p.startswith(PREFIX + "/lib/")]
    check(not outside, "resolved outside the layer: %r" % outside)
    return "%d libraries, all from %s/lib" % (len(libs), PREFIX)


def test_prefix_from_proc_self_exe(h, root):
    moved = os.path.join(root, "usr", "local", "civis")
    shutil.copytree(os.path.join(root, PREFIX.lstrip("/")), moved, symlinks=True)
    try:
        rc, out, err = run(in_root(root, ["/usr/local/civis/bin/civis-agent", "--version"]),
                           {"PATH": "/bin"})
        check(rc == 0 and out.startswith("civis-agent "), "moved layer: %d %r %r" % (rc, out, err))
        # no /proc: the launcher falls back to its compiled-in /opt/civis-agent
        # (LeakSanitizer cannot run without /proc: not with a SAN build)
        if not san_layer():
            rc, out2, err = run(in_root(root, ["/usr/local/civis/bin/civis-agent", "--version"],
                                        proc=False), {"PATH": "/bin"})
            check(rc == 0 and out2 == out, "no /proc: %d %r %r" % (rc, out2, err))
        # and with neither, a clear error and 127
        os.rename(os.path.join(root, PREFIX.lstrip("/")), os.path.join(root, "opt", "away"))
        try:
            rc, out3, err = run(in_root(root, ["/usr/local/civis/bin/civis-agent", "--version"],
                                        proc=False), {"PATH": "/bin"})
        finally:
            os.rename(os.path.join(root, "opt", "away"), os.path.join(root, PREFIX.lstrip("/")))
        check(rc == 127 and "civis-agent launcher: cannot run" in err,
              "missing loader: %d %r" % (rc, err))
    finally:
        shutil.rmtree(moved)
    return out.strip() + ("; fallback without /proc" if not san_layer() else
                          "; (no-/proc fallback not run: SAN build)") + \
        "; 127 when the loader is missing"


def test_upload_subcommand_in_root(h, root):
    """`civis-agent upload` from inside a job, through the launcher."""
    h.reset()
    job = "printf 'report\\n' > /tmp/r.txt && %s/bin/civis-agent upload /tmp/r.txt" % PREFIX
    rc, out, err = run(in_root(root, [PREFIX + "/bin/civis-agent", "--", "/bin/sh", "-c", job]),
                       container_env(h))
    check(rc == 0, "upload subcommand: %d %s" % (rc, err[-1000:]))
    outs = h.outputs()
    files = {f["id"]: f for f in h.files()}
    want = hashlib.sha256(b"report\n").hexdigest()
    check(len(outs) == 1 and files[outs[0]["objectId"]]["sha256"] == want,
          "upload subcommand outputs: %r files %r" % (outs, files))
    return "r.txt registered"


def test_dockerfile_parses(h, root):
    errs = check_dockerfile.check(os.path.join(ROOT, "docker", "Dockerfile"), ROOT, LAYER)
    check(not errs, "\n".join(errs))
    stages = check_dockerfile.stages_of(os.path.join(ROOT, "docker", "Dockerfile"))
    check(list(stages)[-1] == "civis-agent", "the default (last) stage is %r" % list(stages)[-1])
    return "stages %s" % ", ".join(stages)


def test_static_link_deps(h, root):
    """Each library of libarchive's static link (`pkg-config --static`) has its -dev
    package installed by make deps (deps-static) and by the Dockerfile's build stage."""
    r = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT, "deps-static-list"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    check(r.returncode == 0, "make deps-static-list: %s" % r.stderr.decode()[-500:])
    pairs = [ln.split() for ln in r.stdout.decode().splitlines() if ln.strip()]
    check(pairs and all(len(p) == 2 for p in pairs), "deps-static-list said %r" % r.stdout)
    words = set()
    for _, instr, args in check_dockerfile.parse(os.path.join(ROOT, "docker", "Dockerfile")):
        if instr == "RUN" and "apt-get" in args and "install" in args:
            words.update(args.split())
    missing = sorted(p for _, p in pairs if p not in words)
    check(not missing, "docker/Dockerfile's build stage does not install %s" % missing)
    absent = []
    for _, p in pairs if shutil.which("dpkg-query") else []:
        q = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
        if b"install ok installed" not in q.stdout:
            absent.append(p)
    check(not absent, "not installed here (make deps runs deps-static): %s" % absent)
    return "%d libraries (%s): their -dev packages in make deps and the Dockerfile" % (
        len(pairs), " ".join(n for n, _ in pairs))


def san_layer():
    """Whether the layer under test holds a sanitizer build (make SAN=1 layer-test)."""
    return any(n.startswith(("libasan", "libubsan")) for n in os.listdir(os.path.join(LAYER, "lib")))


def test_dockerfile_build_stage(h, root):
    """The build stage's RUN commands on a copy of the context (as COPY . . sees
    it): they must give the tree `make layer` gave, file for file."""
    if san_layer():
        return "skipped: the layer under test is a SAN build, the Dockerfile's is not"
    scratch = tempfile.mkdtemp(prefix="civis-dockerbuild-")
    try:
        ok, log, mapping = check_dockerfile.run_build_stage(
            os.path.join(ROOT, "docker", "Dockerfile"), ROOT, "build", scratch)
        check(ok, "build stage failed:\n" + log[-3000:])
        out = mapping.get("/out/opt/civis-agent")
        check(out and os.path.isdir(out), "no /out/opt/civis-agent: %r" % mapping)

        def tree(d):
            res = {}
            for dp, _, fs in os.walk(d):
                for f in fs:
                    p = os.path.join(dp, f)
                    res[os.path.relpath(p, d)] = os.stat(p).st_mode & 0o7777
            return res
        a, b = tree(LAYER), tree(out)
        check(a == b, "trees differ: only in make layer %s, only in the build stage %s, modes %s"
              % (sorted(set(a) - set(b)), sorted(set(b) - set(a)),
                 sorted(k for k in set(a) & set(b) if a[k] != b[k])))
        for rel in a:
            if rel.startswith("lib/") or rel.startswith("etc/"):
                with open(os.path.join(LAYER, rel), "rb") as x, open(os.path.join(out, rel), "rb") as y:
                    check(x.read() == y.read(), "%s differs" % rel)
        return "%d files, same names, modes, libraries and CA bundle" % len(a)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class TlsProxy:
    """TLS on 127.0.0.1:port in front of the simulator's plain HTTP API port."""

    def __init__(self, cert, key, target_port):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.handshake_errors = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(10)
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.handshake_errors.append(str(e))
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.target))
        try:
            while True:
                ready = [tls] if tls.pending() else select.select([tls, up], [], [], 30)[0]
                if not ready:
                    return
                for src, dst in ((tls, up), (up, tls)):
                    if src in ready:
                        data = src.recv(65536)
                        if not data:
                            return
                        dst.sendall(data)
        except (ssl.SSLError, OSError):
            return
        finally:
            up.close()
            tls.close()

    def close(self):
        self.sock.close()


def make_ca(where):
    """A throwaway self-signed certificate for IP 127.0.0.1: (cert, key)."""
    cert, key = os.path.join(where, "test-ca.pem"), os.path.join(where, "test-ca.key")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=civis-layer-test", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-addext", "basicConstraints=critical,CA:TRUE",
                        "-keyout", key, "-out", cert], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    check(r.returncode == 0, "openssl req failed: %s" % r.stdout[-500:])
    return cert, key


def tls_run(h, root, proxy, extra_env=None):
    """`echo` through the agent in the root, API over TLS; (rc, stderr, messages)."""
    h.reset()
    env = container_env(h, dict({"CIVIS_API_ENDPOINT": "https://127.0.0.1:%d/" % proxy.port},
                                **(extra_env or {})))
    rc, out, err = run(in_root(root, [PREFIX + "/bin/civis-agent", "--final-flush-timeout", "3s",
                                      "--", "/bin/sh", "-c", "echo over tls"]), env)
    return rc, err, [m["message"] for m in h.logs()]


def test_tls_ca_choice(h, root):
    tmp = tempfile.mkdtemp(prefix="civis-tls-")
    layer_ca = os.path.join(root, PREFIX.lstrip("/"), "etc", "ssl", "certs", "ca-certificates.crt")
    image_ca = os.path.join(root, "etc", "ssl", "certs", "ca-certificates.crt")
    with open(layer_ca, "rb") as fh:
        layer_orig = fh.read()
    proxy = None
    try:
        cert, key = make_ca(tmp)
        with open(cert, "rb") as fh:
            pem = fh.read()
        proxy = TlsProxy(cert, key, h.api_port)
        notes = []
        # 1. nothing trusts the test CA: verification fails (the layer bundle was
        #    loaded: a missing bundle would be a different error)
        rc, err, msgs = tls_run(h, root, proxy)
        check(rc == 0 and "over tls" not in msgs, "untrusted CA accepted? rc %d %r" % (rc, msgs))
        check("certificate" in err.lower() and "error setting certificate" not in err.lower(),
              "want a verification failure, got: %s" % err[-800:])
        notes.append("unknown CA refused")
        # 2. the layer's own bundle, found beside the bundled loader
        with open(layer_ca, "ab") as fh:
            fh.write(pem)
        rc, err, msgs = tls_run(h, root, proxy)
        check(rc == 0 and "over tls" in msgs, "layer bundle not used: %d %r %s" % (rc, msgs, err[-800:]))
        notes.append("layer bundle")
        # 3. the image's bundle wins over the layer's
        with open(layer_ca, "wb") as fh:
            fh.write(layer_orig)
        os.makedirs(os.path.dirname(image_ca))
        with open(image_ca, "wb") as fh:
            fh.write(pem)
        rc, err, msgs = tls_run(h, root, proxy)
        check(rc == 0 and "over tls" in msgs, "image bundle not preferred: %d %r %s" % (rc, msgs, err[-800:]))
        notes.append("image bundle first")
        # 4. SSL_CERT_FILE wins over both
        os.rename(image_ca, os.path.join(root, "etc", "test-ca.pem"))
        with open(image_ca, "wb") as fh:
            fh.write(layer_orig)
        rc, err, msgs = tls_run(h, root, proxy, {"SSL_CERT_FILE": "/etc/test-ca.pem"})
        check(rc == 0 and "over tls" in msgs, "SSL_CERT_FILE not taken: %d %r %s" % (rc, msgs, err[-800:]))
        notes.append("SSL_CERT_FILE")
        return ", ".join(notes)
    finally:
        if proxy:
            proxy.close()
        with open(layer_ca, "wb") as fh:
            fh.write(layer_orig)
        shutil.rmtree(os.path.join(root, "etc"), ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def test_non_root_user(h, root):
    """As an unprivileged user (Kubernetes runAsUser, USER in a Dockerfile): the
    layer's files must be readable and executable by anyone."""
    if os.geteuid() != 0:
        return "skipped: not root (the user namespace maps only our own uid)"
    h.reset()
    out = os.path.join(root, "output")
    for f in os.listdir(out):
        os.unlink(os.path.join(out, f))
    os.chown(out, 10001, 10001)
    try:
        rc, o, err = run(in_root(root, [PREFIX + "/bin/civis-agent", "--output-dir", "/output",
                                        "--", "/bin/sh", "-c",
                                        "echo uid=$(id -u 2>/dev/null || echo ?); "
                                        "echo x > /output/u.txt"], uid=10001),
                         container_env(h))
    finally:
        os.chown(out, 0, 0)
    check(rc == 0, "as uid 10001: exit %d: %s" % (rc, err[-1000:]))
    check("uid=10001" in [m["message"] for m in h.logs()], "log: %r" % h.logs())
    names = [f["name"] for f in h.files() if f["complete"]]
    check(names == ["u.txt"] and len(h.outputs()) == 1, "outputs as uid 10001: %r" % names)
    return "uid 10001: log lines and u.txt registered"


TESTS = [test_dockerfile_parses, test_static_link_deps, test_dockerfile_build_stage, test_job_in_empty_root,
         test_child_environment_untouched, test_no_library_from_outside,
         test_prefix_from_proc_self_exe, test_upload_subcommand_in_root, test_tls_ca_choice,
         test_non_root_user]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", default=os.path.join(ROOT, "build", "layer", "opt", "civis-agent"))
    ap.add_argument("--keep", action="store_true", help="keep the root directory")
    a = ap.parse_args()
    global LAYER
    layer = LAYER = os.path.abspath(a.layer)
    if os.geteuid() != 0 and subprocess.run([UNSHARE, "--user", "--map-root-user", "true"],
                                           stderr=subprocess.DEVNULL).returncode != 0:
        print("layer-test: needs root, or unprivileged user namespaces (unshare --user)")
        return 1
    for need in (UNSHARE, MOUNT, "/bin/busybox", os.path.join(layer, "bin", "civis-agent")):
        if not os.path.exists(need):
            print("layer-test: %s is missing (make deps; make layer)" % need)
            return 1
    size = int(subprocess.run(["du", "-sb", layer], check=True, stdout=subprocess.PIPE)
               .stdout.split()[0])
    print("layer: %s, %d bytes (%.1f MiB), launcher %d bytes"
          % (layer, size, size / 1048576.0, os.path.getsize(os.path.join(layer, "bin", "civis-agent"))))
    tmp = tempfile.mkdtemp(prefix="civis-layer-")
    passed = failed = 0
    try:
        root = build_root(layer, tmp)
        with SimHarness() as h:
            for t in TESTS:
                name = t.__name__[len("test_"):]
                try:
                    note = t(h, root)
                    passed += 1
                    print("ok   %-32s %s" % (name, note))
                except Failed as e:
                    failed += 1
                    print("FAIL %-32s %s" % (name, e))
                except Exception:
                    failed += 1
                    print("FAIL %-32s\n%s" % (name, traceback.format_exc()))
    finally:
        if a.keep:
            print("root kept in", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("layer-test: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
