"""engine.py: a container engine (podman or docker) for the image tests and
figures, and the base images they need, made locally when no registry can
be reached.

CONTAINER_ENGINE names the engine (default podman). For podman the global
options default to what this kind of host needs (the issue's settings):
--runtime runc (crun refuses hybrid cgroups), --cgroup-manager cgroupfs,
--storage-driver vfs; CONTAINER_ENGINE_FLAGS replaces them (split on
spaces, empty for none). Every build and run gets
--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 (limits at or below the
host's own: raising them is refused).

Base images: `debian:bookworm` / `debian:bookworm-slim` (the Dockerfile's
and examples/hello's) and `python:3.12-slim` (examples/python's) are used
as they are when the engine has them (or, for docker, can pull them).
Otherwise stand-ins are made: a debootstrapped bookworm minbase with
python3 (cached as build/image/bookworm-minbase.tar), imported under those
names, with a label org.civis-agent.stand-in saying what it is; the Python
one links `python` to python3 (3.11). A second run reuses the tarball and
the engine's images."""
import os
import shutil
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

PODMAN_FLAGS = ["--runtime", "runc", "--cgroup-manager", "cgroupfs", "--storage-driver", "vfs"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
DEBIAN_IMAGES = ("debian:bookworm", "debian:bookworm-slim")
PYTHON_IMAGE = "python:3.12-slim"
STAND_IN_LABEL = "org.civis-agent.stand-in"
LAYER_IMAGE = "civis-agent:latest"
BOOKWORM_IMAGE = "civis-agent:bookworm"
BUILD_STAGE_IMAGE = "civis-image-test/build-stage:latest"


class EngineError(Exception):
    """Something make deps or the engine should have provided is missing or broken."""


class Engine:
    def __init__(self, name=None, log=print):
        self.name = name or os.environ.get("CONTAINER_ENGINE") or "podman"
        self.exe = shutil.which(self.name)
        self.podman = os.path.basename(self.name).startswith("podman")
        flags = os.environ.get("CONTAINER_ENGINE_FLAGS")
        self.flags = flags.split() if flags is not None else (PODMAN_FLAGS if self.podman else [])
        self.log = log

    def cmd(self, *args):
        return [self.exe] + self.flags + [str(a) for a in args]

    def call(self, *args, timeout=120, check=True, input=None):
        """The engine with args; (rc, stdout, stderr) as text. check: raise EngineError on rc != 0."""
        try:
            p = subprocess.run(self.cmd(*args), input=input, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EngineError("%s %s: no answer in %d s" % (self.name, " ".join(map(str, args[:3])),
                                                           timeout))
        out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        if check and p.returncode != 0:
            raise EngineError("%s %s failed (%d): %s" % (self.name, " ".join(map(str, args)),
                                                        p.returncode, err.strip()[-1500:]))
        return p.returncode, out, err

    def check_usable(self):
        """Raise EngineError when the engine is missing or cannot run a container at all."""
        if not self.exe:
            raise EngineError("%s is not installed (make deps installs podman and runc; or set "
                              "CONTAINER_ENGINE)" % self.name)
        self.call("version", timeout=60)

    def image_exists(self, name):
        rc, _, _ = self.call("image", "inspect", "--format", "{{.Id}}", name, check=False, timeout=60)
        return rc == 0

    def image_size(self, name):
        _, out, _ = self.call("image", "inspect", "--format", "{{.Size}}", name, timeout=60)
        return int(out.strip())

    def build(self, tag, context, dockerfile=None, target=None, build_args=None, ignorefile=None,
              timeout=1800):
        """Build an image; returns (seconds, the build's output tail)."""
        args = ["build", "-t", tag, "--network", "host"] + ULIMITS
        if self.podman:
            args += ["--pull=never"]
            if ignorefile:
                args += ["--ignorefile", ignorefile]
        if dockerfile:
            args += ["-f", dockerfile]
        if target:
            args += ["--target", target]
        for k, v in sorted((build_args or {}).items()):
            args += ["--build-arg", "%s=%s" % (k, v)]
        t0 = time.monotonic()
        _, out, err = self.call(*(args + [context]), timeout=timeout)
        return time.monotonic() - t0, (out + err)[-3000:]

    def run_argv(self, image, command=(), env=None, opts=(), name=None, detach=False, rm=True):
        """argv of `ENGINE run` with the host's network (the simulator listens on 127.0.0.1)."""
        args = ["run", "--network", "host"] + ULIMITS
        if rm and not detach:
            args.append("--rm")
        if detach:
            args.append("-d")
        if name:
            args += ["--name", name]
        for k, v in sorted((env or {}).items()):
            args += ["-e", "%s=%s" % (k, v)]
        return self.cmd(*(args + list(opts) + [image] + list(command)))

    def remove(self, name):
        self.call("rm", "-f", name, check=False, timeout=60)


def mirror():
    """The Debian mirror this host's apt uses (deb822 or one-line form)."""
    src = "/etc/apt/sources.list.d/debian.sources"
    if os.path.exists(src):
        with open(src) as fh:
            for line in fh:
                if line.startswith("URIs:"):
                    return line.split()[1]
    if os.path.exists("/etc/apt/sources.list"):
        with open("/etc/apt/sources.list") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb":
                    return parts[1] if not parts[1].startswith("[") else parts[2]
    return "http://deb.debian.org/debian"


def bookworm_tarball(cache, log=print):
    """build/image/bookworm-minbase.tar: a debootstrapped bookworm minbase with python3."""
    tar = os.path.join(cache, "bookworm-minbase.tar")
    if os.path.exists(tar):
        return tar
    if os.geteuid() != 0:
        raise EngineError("making the Debian base image needs root (debootstrap)")
    if not shutil.which("debootstrap"):
        raise EngineError("debootstrap is not installed (make deps)")
    rootfs = os.path.join(cache, "bookworm-rootfs")
    marker = os.path.join(rootfs, ".civis-debootstrap-done")
    if not os.path.exists(marker):
        shutil.rmtree(rootfs, ignore_errors=True)
        os.makedirs(cache, exist_ok=True)
        logf = os.path.join(cache, "debootstrap.log")
        log("image: debootstrap bookworm minbase + python3 (once; a few minutes), log %s" % logf)
        with open(logf, "w") as fh:
            rc = subprocess.call(["debootstrap", "--variant=minbase", "--include=python3",
                                  "bookworm", rootfs, mirror()], stdout=fh, stderr=subprocess.STDOUT,
                                 timeout=1800)
        if rc != 0:
            raise EngineError("debootstrap failed (%d), see %s" % (rc, logf))
        open(marker, "w").close()
    # what a registry's image has: the host's apt sources (the mirror it
    # reaches), no package lists, no caches
    src = "/etc/apt/sources.list.d/debian.sources"
    if os.path.exists(src):
        shutil.copy(src, os.path.join(rootfs, "etc/apt/sources.list.d/debian.sources"))
        try:
            os.unlink(os.path.join(rootfs, "etc/apt/sources.list"))
        except FileNotFoundError:
            pass
    subprocess.call(["chroot", rootfs, "apt-get", "clean"])
    for d in ("var/lib/apt/lists", "var/cache/apt/archives"):
        p = os.path.join(rootfs, d)
        for f in os.listdir(p) if os.path.isdir(p) else []:
            if os.path.isfile(os.path.join(p, f)):
                os.unlink(os.path.join(p, f))
    tmp = tar + ".tmp"
    rc = subprocess.call(["tar", "--numeric-owner", "--exclude=./.civis-debootstrap-done",
                          "-C", rootfs, "-cf", tmp, "."])
    if rc != 0:
        raise EngineError("tar of %s failed (%d)" % (rootfs, rc))
    os.rename(tmp, tar)
    shutil.rmtree(rootfs, ignore_errors=True)
    return tar


def ensure_base_images(eng, cache, log=print):
    """The Dockerfiles' base images, pulled or made; returns a note per image."""
    notes = []
    missing = [i for i in DEBIAN_IMAGES if not eng.image_exists(i)]
    if missing and not eng.podman:   # docker with a registry: the real ones
        for i in list(missing):
            if eng.call("pull", i, check=False, timeout=600)[0] == 0:
                missing.remove(i)
    if missing:
        tar = bookworm_tarball(cache, log)
        ref = "docker.io/library/" + DEBIAN_IMAGES[0] if eng.podman else DEBIAN_IMAGES[0]
        eng.call("import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--change", 'CMD ["bash"]', "--change",
                 "LABEL %s=debootstrap-bookworm-minbase+python3" % STAND_IN_LABEL, tar, ref,
                 timeout=600)
        for i in DEBIAN_IMAGES[1:]:
            eng.call("tag", ref, ("docker.io/library/" + i) if eng.podman else i)
        notes.append("%s: stand-ins imported from %s" % (", ".join(DEBIAN_IMAGES), tar))
    else:
        notes.append("%s: present" % ", ".join(DEBIAN_IMAGES))
    if not eng.image_exists(PYTHON_IMAGE) and \
            (eng.podman or eng.call("pull", PYTHON_IMAGE, check=False, timeout=600)[0] != 0):
        ctx = os.path.join(cache, "ctx-python-base")
        os.makedirs(ctx, exist_ok=True)
        with open(os.path.join(ctx, "Dockerfile"), "w") as fh:
            fh.write("FROM debian:bookworm-slim\n"
                     "LABEL %s=\"debootstrap bookworm minbase, python3 3.11 as python\"\n"
                     "RUN ln -s /usr/bin/python3 /usr/local/bin/python\n"
                     'CMD ["python3"]\n' % STAND_IN_LABEL)
        eng.build(("docker.io/library/" + PYTHON_IMAGE) if eng.podman else PYTHON_IMAGE, ctx)
        notes.append("%s: stand-in (bookworm python3 3.11)" % PYTHON_IMAGE)
    else:
        notes.append("%s: present" % PYTHON_IMAGE)
    return notes


BUSYBOX_APPLETS = ("sh", "cat", "echo", "env", "id", "ls", "printf", "readlink", "sleep", "true",
                   "grep", "seq", "wc", "head", "mkdir", "kill", "test", "[", "ps", "dd")


def busybox_context(cache, job):
    """build/image/ctx-busybox: rootfs/ (busybox-static and its applets, /tmp 1777)
    and output/ (empty: COPY --chown makes /output), plus the static job."""
    ctx = os.path.join(cache, "ctx-busybox")
    shutil.rmtree(ctx, ignore_errors=True)
    bb = "/bin/busybox"
    if not os.path.exists(bb):
        raise EngineError("/bin/busybox is missing (make deps installs busybox-static)")
    os.makedirs(os.path.join(ctx, "rootfs", "bin"))
    os.makedirs(os.path.join(ctx, "rootfs", "tmp"))
    os.makedirs(os.path.join(ctx, "output"))
    os.chmod(os.path.join(ctx, "rootfs", "tmp"), 0o1777)
    shutil.copy2(bb, os.path.join(ctx, "rootfs", "bin", "busybox"))
    for a in BUSYBOX_APPLETS:
        os.symlink("busybox", os.path.join(ctx, "rootfs", "bin", a))
    shutil.copy2(job, os.path.join(ctx, "job"))
    return ctx


def static_context(cache, job):
    """build/image/ctx-static: the static job alone, and output/ (empty)."""
    ctx = os.path.join(cache, "ctx-static")
    shutil.rmtree(ctx, ignore_errors=True)
    os.makedirs(os.path.join(ctx, "output"))
    shutil.copy2(job, os.path.join(ctx, "job"))
    return ctx


def build_all(eng, cache, job, log=print):
    """Every image of the tests; returns {what: note}. Raises EngineError on a failed build."""
    notes = {}
    for n in ensure_base_images(eng, cache, log):
        log("image: base " + n)
    dockerfile = os.path.join(ROOT, "docker", "Dockerfile")
    ignore = os.path.join(ROOT, "docker", "Dockerfile.dockerignore")
    # the build stage tagged, so that pruning keeps its cached steps (apt-get)
    s0, _ = eng.build(BUILD_STAGE_IMAGE, ROOT, dockerfile=dockerfile, target="build", ignorefile=ignore)
    s, _ = eng.build(LAYER_IMAGE, ROOT, dockerfile=dockerfile, ignorefile=ignore)
    notes["layer"] = "%s in %.0f s (its build stage %.0f s)" % (LAYER_IMAGE, s0 + s, s0)
    s, _ = eng.build(BOOKWORM_IMAGE, ROOT, dockerfile=dockerfile, target="bookworm", ignorefile=ignore)
    notes["bookworm"] = "%s in %.0f s" % (BOOKWORM_IMAGE, s)
    arg = {"CIVIS_AGENT_IMAGE": LAYER_IMAGE}
    s, _ = eng.build(USER_IMAGES["python"], os.path.join(ROOT, "examples", "python"), build_args=arg)
    notes["python"] = "%s (examples/python/Dockerfile) in %.0f s" % (USER_IMAGES["python"], s)
    s, _ = eng.build(USER_IMAGES["busybox"], busybox_context(cache, job),
                     dockerfile=os.path.join(HERE, "Dockerfile.busybox"), build_args=arg)
    notes["busybox"] = "%s in %.0f s" % (USER_IMAGES["busybox"], s)
    s, _ = eng.build(USER_IMAGES["static"], static_context(cache, job),
                     dockerfile=os.path.join(HERE, "Dockerfile.static"), build_args=arg)
    notes["static"] = "%s in %.0f s" % (USER_IMAGES["static"], s)
    # what earlier builds left untagged (with vfs each is a full copy)
    eng.call("image", "prune", "-f", check=False, timeout=600)
    return notes


USER_IMAGES = {"python": "civis-image-test/python:latest",
               "busybox": "civis-image-test/busybox:latest",
               "static": "civis-image-test/static:latest"}
