"""harness.py: start the Civis API simulator (optionally behind Prism) and run the
agent against it. For unittest-based integration tests and demo scripts.

    from harness import SimHarness
    with SimHarness(use_prism=True) as h:
        h.set_faults([{"action": "status", "status": 503, "count": 2}])
        res = h.run_agent(["--", "sh", "-c", "echo hello"])
        h.wait_logs(1)
        assert h.log_messages() == ["hello"]
        h.assert_no_prism_violations()

Everything started here runs in its own process group and is killed at exit
(atexit, and the simulator also exits when this process is gone)."""

import atexit
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SIM_SCRIPT = os.path.join(HERE, "civis_sim.py")


CONTRACT_IN_TREE = os.path.join(ROOT, "tests", "contract", "agent-contract.json")


def contract_path():
    """$CIVIS_CONTRACT, else the repository's own tests/contract/agent-contract.json."""
    return os.environ.get("CIVIS_CONTRACT") or CONTRACT_IN_TREE


def prism_path():
    return os.environ.get("PRISM") or os.path.join(ROOT, "node_modules", ".bin", "prism")


def agent_path():
    return os.environ.get("CIVIS_AGENT") or os.path.join(ROOT, "build", "civis-agent")


def prism_missing():
    """Why Prism cannot run here (one line saying what to do), or None when it can."""
    if not os.access(prism_path(), os.X_OK):
        return "Prism not installed at %s: run `make prism` (or `make deps`)" % prism_path()
    if shutil.which("node") is None:
        return "node not on PATH (Prism needs it): run `make deps`"
    if not os.path.exists(contract_path()):
        return "contract %s not found: unset CIVIS_CONTRACT to use the in-tree %s" % (
            contract_path(), CONTRACT_IN_TREE)
    return None


def prism_available():
    return prism_missing() is None


# ------------------------------------------------------------------ process groups

_children = []
_children_lock = threading.Lock()

try:   # resolved here, so that the child after fork only makes the call
    import ctypes
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (ImportError, OSError, AttributeError):
    _prctl = None
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _spawn(argv, **kw):
    # Own process group (killed as a whole); and, when started from the main
    # thread, killed by the kernel should this process die without atexit
    # (PR_SET_PDEATHSIG fires when the forking thread ends).
    if _prctl is not None and threading.current_thread() is threading.main_thread():
        kw["preexec_fn"] = _die_with_parent
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    with _children_lock:
        _children.append(p)
    return p


def _kill_group(p, grace=3.0):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:   # the leader may be gone while others of its group live on
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    with _children_lock:
        if p in _children:
            _children.remove(p)


@atexit.register
def _kill_all():
    with _children_lock:
        procs = list(_children)
    for p in procs:
        _kill_group(p, grace=1.0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ results

class AgentResult:
    """What a run of a command gave: returncode (negative: killed by that signal),
    stdout/stderr bytes, wall seconds, timed_out."""

    def __init__(self, argv, returncode, stdout, stderr, wall, timed_out):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.wall = wall
        self.timed_out = timed_out

    def __repr__(self):
        return "AgentResult(rc=%r, wall=%.3fs, timed_out=%r, stdout=%r, stderr=%r)" % (
            self.returncode, self.wall, self.timed_out, self.stdout[:200], self.stderr[:500])


class SimError(Exception):
    pass


# ------------------------------------------------------------------ contract

DATE_TIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})$")


class Contract:
    """A small Swagger 2.0 response validator for agent-contract.json (type,
    required, properties, items, $ref, x-nullable, date-time): enough to check
    that the simulator answers what the contract says, without Prism."""

    def __init__(self, path=None):
        with open(path or contract_path()) as fh:
            self.doc = json.load(fh)
        self.routes = []
        for tpl, ops in self.doc["paths"].items():
            rx = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(tpl)) + "$")
            for method, op in ops.items():
                self.routes.append((method.upper(), tpl, rx, op))

    def operation(self, method, path):
        path = "/" + urllib.parse.urlsplit(path).path.lstrip("/")
        for m, tpl, rx, op in self.routes:
            if m == method.upper() and rx.match(path):
                return tpl, op
        return None, None

    def validate_response(self, method, path, status, body):
        """Errors (list of strings) of an answer against the contract; [] when valid."""
        tpl, op = self.operation(method, path)
        if op is None:
            return ["no operation %s %s in the contract" % (method, path)]
        resp = op.get("responses", {}).get(str(status))
        if resp is None:
            return ["status %d not defined for %s %s" % (status, method, tpl)]
        schema = resp.get("schema")
        if schema is None:
            return [] if not body else ["%s %s %d: the contract has no body, got %d bytes"
                                        % (method, tpl, status, len(body))]
        try:
            obj = json.loads(body)
        except ValueError as e:
            return ["%s %s: body is not JSON: %s" % (method, tpl, e)]
        errs = []
        self._check(schema, obj, "body", errs)
        return errs

    def _resolve(self, schema):
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            schema = self.doc["definitions"][name]
        return schema

    def _check(self, schema, v, where, errs):
        nullable = schema.get("x-nullable", False)
        schema = self._resolve(schema)
        nullable = nullable or schema.get("x-nullable", False)
        if v is None:
            if not nullable:
                errs.append("%s: null is not allowed" % where)
            return
        t = schema.get("type")
        ok = {"integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
              "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
              "string": lambda x: isinstance(x, str),
              "boolean": lambda x: isinstance(x, bool),
              "object": lambda x: isinstance(x, dict),
              "array": lambda x: isinstance(x, list),
              None: lambda x: True}[t]
        if not ok(v):
            errs.append("%s: expected %s, got %s" % (where, t, type(v).__name__))
            return
        if t == "string" and schema.get("format") == "date-time" and not DATE_TIME_RE.match(v):
            errs.append("%s: %r is not a date-time" % (where, v))
        if t == "array" and "items" in schema:
            for i, x in enumerate(v):
                self._check(schema["items"], x, "%s[%d]" % (where, i), errs)
        if isinstance(v, dict):
            for r in schema.get("required", []):
                if r not in v:
                    errs.append("%s: required property %s missing" % (where, r))
            for k, sub in schema.get("properties", {}).items():
                if k in v:
                    self._check(sub, v[k], "%s.%s" % (where, k), errs)


# ------------------------------------------------------------------ the harness

class SimHarness:
    """The simulator (and Prism with use_prism=True) for one test or demo."""

    def __init__(self, api_key="sim-key-3f1c2a9d7e", job_id=11, run_id=22, use_prism=False,
                 contract=None, verbose=False, max_lifetime=1800, start_timeout=60, sim_args=()):
        """sim_args: more civis_sim.py options, e.g. ["--rate-limit", "100", "--delay-ms", "50"]."""
        self.api_key = api_key
        self.job_id = job_id
        self.run_id = run_id
        self.use_prism = use_prism
        self.contract = contract or contract_path()
        self.verbose = verbose
        self.max_lifetime = max_lifetime
        self.start_timeout = start_timeout
        self.sim_args = list(sim_args)
        self.sim_proc = None
        self.prism_proc = None
        self.prism_port = None
        self.prism_lines = []
        self._prism_lock = threading.Lock()
        self.api_port = None
        self.storage_port = None
        self.tmp = None

    # ---------------------------------------------------------- lifecycle

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="civis-harness-")
        ready = os.path.join(self.tmp, "ready.json")
        argv = [sys.executable, SIM_SCRIPT, "--port", "0", "--storage-port", "0",
                "--api-key", self.api_key, "--ready-file", ready,
                "--data-dir", os.path.join(self.tmp, "data"),
                "--parent-pid", str(os.getpid()), "--max-lifetime", str(self.max_lifetime)]
        if self.job_id is not None:
            argv += ["--job-id", str(self.job_id)]
        if self.run_id is not None:
            argv += ["--run-id", str(self.run_id)]
        if self.verbose:
            argv.append("--verbose")
        argv += self.sim_args
        self.sim_log = open(os.path.join(self.tmp, "sim.log"), "wb")
        self.sim_proc = _spawn(argv, stdin=subprocess.DEVNULL, stdout=self.sim_log,
                               stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while not os.path.exists(ready):
            if self.sim_proc.poll() is not None:
                raise SimError("simulator exited with %s: %s" % (self.sim_proc.returncode,
                                                                  self.sim_log_text()))
            if time.monotonic() > deadline:
                self.stop()
                raise SimError("simulator not ready in %ss" % self.start_timeout)
            time.sleep(0.02)
        with open(ready) as fh:
            info = json.load(fh)
        self.api_port, self.storage_port = info["api"], info["storage"]
        if self.use_prism:
            try:
                self._start_prism(deadline)
            except SimError:
                self.stop()     # a failed start leaves nothing running
                raise
        return self

    def _start_prism(self, deadline):
        why = prism_missing()
        if why is None and not os.path.exists(self.contract):
            why = "contract %s not found" % self.contract
        if why is not None:
            raise SimError(why)
        for _attempt in range(3):
            self.prism_port = free_port()
            argv = [prism_path(), "proxy", self.contract, "http://127.0.0.1:%d" % self.api_port,
                    "--errors", "--port", str(self.prism_port), "-h", "127.0.0.1"]
            env = dict(os.environ, NO_COLOR="1", FORCE_COLOR="0")
            self.prism_proc = _spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env)
            listening = threading.Event()
            threading.Thread(target=self._read_prism, args=(self.prism_proc, listening),
                             daemon=True).start()
            while not listening.is_set():
                if self.prism_proc.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    self.stop()
                    raise SimError("Prism not listening in time:\n" + "\n".join(self.prism_lines[-20:]))
                listening.wait(0.05)
            if listening.is_set():
                return
            _kill_group(self.prism_proc)   # port taken meanwhile? try another one
        self.stop()
        raise SimError("Prism failed to start:\n" + "\n".join(self.prism_lines[-20:]))

    def _read_prism(self, proc, listening):
        ansi = re.compile(r"\x1b\[[0-9;]*m")
        for raw in proc.stdout:
            line = ansi.sub("", raw.decode("utf-8", "replace").rstrip("\n"))
            with self._prism_lock:
                self.prism_lines.append(line)
            if "Prism is listening" in line:
                listening.set()

    def stop(self):
        for p in (self.prism_proc, self.sim_proc):
            if p is not None:
                _kill_group(p)
        self.prism_proc = self.sim_proc = None
        if getattr(self, "sim_log", None):
            self.sim_log.close()
            self.sim_log = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def sim_log_text(self):
        try:
            with open(os.path.join(self.tmp, "sim.log"), "rb") as fh:
                return fh.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    # ---------------------------------------------------------- addresses

    @property
    def sim_url(self):
        return "http://127.0.0.1:%d/" % self.api_port

    @property
    def endpoint(self):
        """What the agent's CIVIS_API_ENDPOINT is: Prism when in use, else the simulator."""
        port = self.prism_port if self.use_prism else self.api_port
        return "http://127.0.0.1:%d/" % port

    @property
    def storage_url(self):
        return "http://127.0.0.1:%d/" % self.storage_port

    def run_path(self, suffix=""):
        return "scripts/containers/%d/runs/%d%s" % (self.job_id, self.run_id, suffix)

    def env(self, extra=None, base=None):
        """The environment of a container script, pointing at this simulator."""
        e = dict(os.environ if base is None else base)
        e.update({"CIVIS_API_ENDPOINT": self.endpoint, "CIVIS_API_KEY": self.api_key,
                  "CIVIS_JOB_ID": str(self.job_id), "CIVIS_RUN_ID": str(self.run_id)})
        e.update(extra or {})
        return e

    # ---------------------------------------------------------- control API

    def control(self, method, path, body=None, query=None, timeout=30.0, raw=False):
        """Call /_sim/<path>. Retries while the API port refuses (refuse faults),
        falling back to the storage port, which serves /_sim/ too."""
        q = ("?" + urllib.parse.urlencode(query)) if query else ""
        data = None if body is None else json.dumps(body).encode()
        deadline = time.monotonic() + max(timeout, 5.0) + 30
        last = None
        ports = [self.api_port, self.storage_port]
        i = 0
        while time.monotonic() < deadline:
            port = ports[i % 2]
            i += 1
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout + 10)
            try:
                conn.request(method, "/_sim/" + path + q, body=data,
                             headers={"Content-Type": "application/json"} if data else {})
                resp = conn.getresponse()
                out = resp.read()
                if resp.status >= 400:
                    raise SimError("/_sim/%s: %d %s" % (path, resp.status, out[:500]))
                return out if raw else json.loads(out)
            except (http.client.HTTPException, OSError) as e:   # refused, reset, timed out
                last = e
                time.sleep(0.05)
            finally:
                conn.close()
        raise SimError("control API unreachable: %s" % last)

    def reset(self):
        return self.control("POST", "reset", {})

    def set_faults(self, faults, append=False):
        return self.control("POST", "faults", {"faults": faults, "append": append})

    def clear_faults(self):
        return self.set_faults([])

    def faults(self):
        return self.control("GET", "faults")

    def set_run(self, **fields):
        """e.g. set_run(isCancelRequested=True) or set_run(state="cancelled")."""
        return self.control("POST", "run", fields)

    def refuse(self, server="api", seconds=2.0, after=0.05):
        """Close that listening socket for `seconds` (connects get ECONNREFUSED)."""
        return self.control("POST", "refuse", {"server": server, "seconds": seconds, "after": after})

    def state(self):
        return self.control("GET", "state")

    def logs(self, offset=0):
        return self.control("GET", "logs", query={"offset": offset})

    def log_messages(self):
        return self.control("GET", "logs", query={"format": "messages"})

    def heartbeats(self):
        return self.control("GET", "heartbeats")

    def files(self):
        return self.control("GET", "files")

    def file_data(self, file_id):
        return self.control("GET", "files/%d/data" % file_id, raw=True, timeout=120)

    def outputs(self):
        return self.control("GET", "outputs")

    def requests(self, server=None, path=None):
        """Every non-control request; `server` "api"/"storage", `path` a path prefix."""
        q = {k: v for k, v in (("server", server), ("path", path)) if v}
        return self.control("GET", "requests", query=q or None)

    def config(self):
        """The simulator's settings: rateLimit, rateWindow, delayMs, storageDelayMs,
        heartbeatStatus, runPatchStatus."""
        return self.control("GET", "config")

    def set_config(self, **settings):
        """e.g. set_config(rateLimit=100, rateWindow=30) or set_config(heartbeatStatus=404).
        Until reset(), which restores the command line's settings."""
        return self.control("POST", "config", settings)

    def ratelimit(self):
        """Rate-limit counts: limit, window, keys {used, remaining}, clients {agent|user:
        requests, limited, maxInWindow, userAgents, windows [{index, start, requests, limited}]}."""
        return self.control("GET", "ratelimit")

    def patches(self):
        """Every PATCH of a run: time, jobId, runId, body (parsed JSON or None),
        requestSeq, status (204, 400, or the runPatchStatus answered)."""
        return self.control("GET", "patches")

    def json_values(self):
        return self.control("GET", "json_values")

    def set_objects(self, object_type, known=(), unknown=(), strict=None, append=False):
        """Which ids of Table/Report/Project/Credential a registration finds: `known`
        ids (or {"id", "name"}), `unknown` ids (404), `strict` (only known ids exist)."""
        body = {"objectType": object_type, "known": list(known), "unknown": list(unknown),
                "append": append}
        if strict is not None:
            body["strict"] = strict
        return self.control("POST", "objects", body)

    def violations(self):
        return self.control("GET", "violations")

    def wait_for(self, timeout=10.0, **counts):
        """Block until each count is reached (logs, heartbeats, outputs, requests, files,
        filesComplete). Returns the counts; raises AssertionError on timeout."""
        q = dict(counts, timeout=timeout)
        r = self.control("GET", "wait", query=q, timeout=timeout)
        if not r["ok"]:
            raise AssertionError("timed out after %ss waiting for %s; have %s" % (timeout, counts, r))
        return r

    def wait_logs(self, n, timeout=10.0):
        return self.wait_for(timeout=timeout, logs=n)

    def assert_no_violations(self):
        v = self.violations()
        if v:
            raise AssertionError("simulator recorded protocol violations: %s" % json.dumps(v, indent=1))

    # ---------------------------------------------------------- Prism output

    def prism_output(self, since=0, settle=0.15):
        """Prism's output lines from `since`, once it has been quiet for `settle` s
        (it logs a request's outcome just after answering it)."""
        if self.prism_proc is not None and settle > 0:
            deadline = time.monotonic() + 3.0
            n = -1
            while time.monotonic() < deadline:
                with self._prism_lock:
                    m = len(self.prism_lines)
                if m == n:
                    break
                n = m
                time.sleep(settle)
        with self._prism_lock:
            return list(self.prism_lines[since:])

    def prism_mark(self):
        return len(self.prism_output())

    def prism_errors(self, since=0):
        """Prism's error lines: requests it refused (422, 401...) and upstream answers
        that break the contract (500 VIOLATIONS). Warnings (e.g. a 503 that the
        contract does not list) are not errors."""
        return [ln for ln in self.prism_output(since)
                if "\u2716" in ln or "Request terminated with error" in ln
                or re.search(r"\berror\b\s+Violation", ln)]

    def prism_warnings(self, since=0):
        return [ln for ln in self.prism_output(since) if "\u26a0" in ln or " warning " in ln]

    def assert_no_prism_violations(self, since=0):
        if not self.use_prism:
            return
        errs = self.prism_errors(since)
        if errs:
            raise AssertionError("Prism reported contract violations:\n" + "\n".join(errs))

    # ---------------------------------------------------------- direct API calls

    def api(self, method, path, body=None, auth=True, headers=None, via_prism=None, timeout=30,
            raw_body=None):
        """One API call (through Prism when use_prism, unless via_prism=False).
        Returns (status, headers dict lower-cased, body bytes)."""
        use = self.use_prism if via_prism is None else via_prism
        port = self.prism_port if use else self.api_port
        h = {}
        if auth:
            h["Authorization"] = "Basic " + base64.b64encode((self.api_key + ":").encode()).decode()
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request(method, "/" + path.lstrip("/"), body=data, headers=h)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    # ---------------------------------------------------------- the agent

    def run_agent(self, args, env=None, timeout=60.0, stdin=None, cwd=None, agent=None,
                  extra_env=None):
        """Run `agent args...` (default build/civis-agent) with the CIVIS_* variables
        set; stdin is bytes or None. Returns an AgentResult."""
        argv = [agent or agent_path()] + list(args)
        return self.run_command(argv, env=env if env is not None else self.env(extra_env),
                                timeout=timeout, stdin=stdin, cwd=cwd)

    @staticmethod
    def run_command(argv, env=None, timeout=60.0, stdin=None, cwd=None):
        t0 = time.monotonic()
        p = _spawn(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
        timed_out = False
        try:
            out, err = p.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(p, grace=2.0)
            out, err = p.communicate()
        wall = time.monotonic() - t0
        rc = p.returncode
        _kill_group(p, grace=0)     # whatever of its process group is left
        return AgentResult(argv, rc, out, err, wall, timed_out)
