#!/usr/bin/env python3
"""civis_sim.py: a local Civis API + S3 storage simulator for civis-agent tests.

Python 3 standard library only. Two listeners on 127.0.0.1:

  api      the agent's endpoints of agent-contract.json (Basic auth checked),
           plus the control API under /_sim/ (no auth)
  storage  the presigned-URL side: S3-style form POST and multipart part PUTs

    python3 tests/sim/civis_sim.py --port 0 --storage-port 0 --api-key KEY \
        --ready-file /tmp/ready.json

writes {"api": N, "storage": M, "pid": P} to the ready file once listening.
The fault plan, the records and the control API are described in README.md.
"""

import argparse
import base64
import collections
import hashlib
import hmac
import json
import math
import os
import queue
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUCKET = "civis-sim-files"
MIN_PART = 5 << 20            # S3: every part but the last at least 5 MiB
MAX_PART = 5 << 30            # S3: at most 5 GiB a part
MAX_PARTS = 10000
MAX_FORM = (5 << 30) + (1 << 20)  # one form POST: 5 GiB plus the form fields
API_BODY_CAP = 64 << 20       # largest JSON body the API side accepts
FIELD_CAP = 64 << 10          # one non-file form field
HEADER_BLOCK_CAP = 16 << 10   # headers of one form part
CHUNK = 1 << 20               # reads and writes of stored files
RECV_CHUNK = 2 << 20          # one receive buffer of an upload body
RING_DEPTH = 4                # receive buffers in flight per upload (being hashed)
FORM_READ = 64 << 10          # reads of form headers and fields
SPARE_MIN = 1 << 20           # stored files at least this big are kept for reuse ...
SPARE_CAP = 4 << 30           # ... up to this many bytes in all
LOG_LIMIT_DEFAULT = 10000
JSON_VALUE_CAP = 1000000      # the API's limit on valueStr, in bytes
SIM_SECRET = b"civis-sim-signing-secret"
CREDENTIAL = "AKIASIMULATOR000000/20261127/us-east-1/s3/aws4_request"

RFC3339_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
DISPO_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_\-\*]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
OBJECT_TYPES = ("File", "Table", "Report", "Project", "Credential", "JSONValue")
# objects the simulator itself creates (a registration of an unknown id is a 404);
# the others exist unless the control API says otherwise (/_sim/objects)
OWN_TYPES = ("File", "JSONValue")
LINK_PATHS = {"File": "files", "JSONValue": "json_values", "Table": "tables",
              "Report": "reports", "Project": "projects", "Credential": "credentials"}

REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    302: "Found", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    409: "Conflict", 410: "Gone", 411: "Length Required", 413: "Payload Too Large",
    415: "Unsupported Media Type", 422: "Unprocessable Entity",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}
S3_CODES = {400: "InvalidRequest", 403: "AccessDenied", 404: "NoSuchKey",
            411: "MissingContentLength", 500: "InternalError",
            503: "SlowDown", 504: "RequestTimeout"}
API_ERRORS = {400: "bad_request", 401: "unauthorized", 403: "forbidden",
              404: "not_found", 405: "method_not_allowed", 409: "conflict", 410: "gone",
              413: "payload_too_large", 415: "unsupported_media_type",
              422: "unprocessable_entity", 429: "too_many_requests",
              500: "internal_server_error", 502: "bad_gateway",
              503: "service_unavailable", 504: "gateway_timeout"}


class ClientGone(Exception):
    """The peer closed the connection before sending all it announced."""


class HttpError(Exception):
    def __init__(self, status, description, code=None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.code = code


def iso_ms(t=None):
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


def iso_ns_now():
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1000000000)) + ".%09dZ" % (ns % 1000000000)


def created_at_key(s):
    """Sort key for an RFC 3339 string: (UTC seconds, nanoseconds)."""
    m = RFC3339_RE.match(s or "")
    if not m:
        return (float("inf"), 0)
    frac = m.group(1) or ""
    ns = int((frac[1:] + "000000000")[:9]) if frac else 0
    base = s[:19].replace("t", "T")
    secs = time.mktime(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) - time.timezone
    tz = m.group(2)
    if tz not in ("Z", "z"):
        off = int(tz[1:3]) * 3600 + int(tz[4:6]) * 60
        secs -= off if tz[0] == "+" else -off
    return (int(secs), ns)


def jdump(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def api_error_body(status, description, code=None):
    return jdump({"error": code or API_ERRORS.get(status, "error"),
                  "errorDescription": description, "code": status})


def s3_error_body(code, message, resource=""):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
            '<Resource>%s</Resource><RequestId>SIM%08X</RequestId></Error>'
            % (xml_escape(code), xml_escape(message), xml_escape(resource),
               int(time.monotonic() * 1000) & 0xFFFFFFFF)).encode()


def xml_escape(s):
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def sign(*parts):
    return hmac.new(SIM_SECRET, "\n".join(str(p) for p in parts).encode(), hashlib.sha256).hexdigest()


class Reply:
    """An answer before it goes out: status, headers, body (bytes)."""
    __slots__ = ("status", "headers", "body", "ctype")

    def __init__(self, status, body=b"", headers=None, ctype="application/json; charset=utf-8"):
        self.status = status
        self.body = body
        self.headers = list(headers or [])
        self.ctype = ctype if body else None


def api_reply(status, obj=None, headers=None):
    return Reply(status, b"" if obj is None else jdump(obj), headers)


def api_err(status, description, code=None, headers=None):
    return Reply(status, api_error_body(status, description, code), headers)


def s3_err(status, code, message, resource=""):
    return Reply(status, s3_error_body(code, message, resource), ctype="application/xml")


# ------------------------------------------------------------------ faults

FAULT_ACTIONS = ("status", "delay", "refuse", "cut", "malformed", "hostile")
MALFORMED_KINDS = ("html502", "truncated", "empty200", "garbage", "nonjson")
HOSTILE_KINDS = ("huge_length", "endless", "deep_json", "huge_retry_after",
                 "redirect", "upload_url_to_api")
FAULT_KEYS = {"id", "server", "method", "path", "pathRegex", "part", "count", "every",
              "after", "start", "duration", "action", "status", "retryAfter", "headers",
              "body", "code", "message", "delay", "seconds", "kind", "store", "location",
              "depth", "length", "maxBytes", "early"}


def default_store(f):
    a, k = f["action"], f.get("kind")
    if a in ("status", "refuse"):
        return False
    if a == "malformed":
        return k != "html502"
    if a == "hostile":
        return k not in ("redirect", "huge_retry_after")
    return True


def validate_fault(f, idx):
    if not isinstance(f, dict):
        raise HttpError(400, "fault %d: not an object" % idx)
    unknown = set(f) - FAULT_KEYS
    if unknown:
        raise HttpError(400, "fault %d: unknown keys %s" % (idx, sorted(unknown)))
    a = f.get("action")
    if a not in FAULT_ACTIONS:
        raise HttpError(400, "fault %d: action must be one of %s" % (idx, FAULT_ACTIONS))
    if f.get("server", "api") not in ("api", "storage", "any"):
        raise HttpError(400, "fault %d: server must be api, storage or any" % idx)
    if a == "status" and not isinstance(f.get("status"), int):
        raise HttpError(400, "fault %d: status action needs an integer status" % idx)
    if a == "malformed" and f.get("kind") not in MALFORMED_KINDS:
        raise HttpError(400, "fault %d: malformed kind must be one of %s" % (idx, MALFORMED_KINDS))
    if a == "hostile" and f.get("kind") not in HOSTILE_KINDS:
        raise HttpError(400, "fault %d: hostile kind must be one of %s" % (idx, HOSTILE_KINDS))
    for k in ("count", "every", "after", "part", "depth", "length", "maxBytes"):
        if k in f and (not isinstance(f[k], int) or isinstance(f[k], bool) or f[k] < 0):
            raise HttpError(400, "fault %d: %s must be a non-negative integer" % (idx, k))
    for k in ("start", "duration", "delay", "seconds"):
        if k in f and (not isinstance(f[k], (int, float)) or isinstance(f[k], bool) or f[k] < 0):
            raise HttpError(400, "fault %d: %s must be a non-negative number" % (idx, k))
    if "pathRegex" in f:
        try:
            re.compile(f["pathRegex"])
        except re.error as e:
            raise HttpError(400, "fault %d: bad pathRegex: %s" % (idx, e))


class FaultPlan:
    def __init__(self):
        self.lock = threading.Lock()
        self.faults = []
        self.t0 = time.monotonic()

    def set(self, faults, append=False):
        for i, f in enumerate(faults):
            validate_fault(f, i)
        with self.lock:
            if not append:
                self.faults = []
                self.t0 = time.monotonic()
            for i, f in enumerate(faults):
                g = dict(f)
                g.setdefault("id", "f%d" % (len(self.faults) + 1))
                g.setdefault("server", "api")
                g["_store"] = f.get("store", default_store(f))
                g["_re"] = re.compile(f["pathRegex"]) if "pathRegex" in f else None
                g["_seen"] = 0
                g["_applied"] = 0
                g["_t0"] = time.monotonic()
                self.faults.append(g)

    def describe(self):
        with self.lock:
            return [{**{k: v for k, v in f.items() if not k.startswith("_")},
                     "seen": f["_seen"], "applied": f["_applied"]} for f in self.faults]

    def match(self, side, method, path, part):
        """The first fault that applies to this request (counters updated), or None."""
        now = time.monotonic()
        with self.lock:
            for f in self.faults:
                if f["server"] != "any" and f["server"] != side:
                    continue
                if "method" in f and f["method"].upper() != method:
                    continue
                if "path" in f and not path.startswith(f["path"]):
                    continue
                if f["_re"] is not None and not f["_re"].search(path):
                    continue
                if "part" in f and f["part"] != part:
                    continue
                t = now - f["_t0"]
                if t < f.get("start", 0):
                    continue
                if "duration" in f and t >= f.get("start", 0) + f["duration"]:
                    continue
                f["_seen"] += 1
                n = f["_seen"] - f.get("after", 0)
                if n <= 0:
                    continue
                if f.get("every", 0) > 1 and n % f["every"] != 0:
                    continue
                if "count" in f and f["_applied"] >= f["count"]:
                    continue
                f["_applied"] += 1
                return dict(f)
        return None


# ------------------------------------------------------------------ settings, rate limit

MISSING_STATUSES = (404, 405, 410)
CONFIG_DEFAULTS = {"rateLimit": 0, "rateWindow": 300.0, "delayMs": 0.0, "storageDelayMs": 0.0,
                   "heartbeatStatus": None, "runPatchStatus": None, "etag": "sha256"}
ETAG_KINDS = ("md5", "sha256", "opaque")


def check_config(obj):
    """A validated copy of a partial configuration; HttpError 400 on a bad value."""
    if not isinstance(obj, dict):
        raise HttpError(400, "the configuration must be an object")
    unknown = set(obj) - set(CONFIG_DEFAULTS)
    if unknown:
        raise HttpError(400, "unknown settings %s (known: %s)" % (sorted(unknown), sorted(CONFIG_DEFAULTS)))
    out = {}
    for k, v in obj.items():
        if k == "rateLimit":
            ok = type(v) is int and v >= 0
        elif k in ("heartbeatStatus", "runPatchStatus"):
            ok = v is None or v in MISSING_STATUSES
        elif k == "etag":
            ok = v in ETAG_KINDS
        else:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 \
                and (k != "rateWindow" or v > 0)
        if not ok:
            raise HttpError(400, "bad value for %s: %r (rateLimit an integer >= 0, rateWindow "
                            "seconds > 0, delays milliseconds >= 0, statuses null, 404, 405 "
                            "or 410, etag md5, sha256 or opaque)" % (k, v))
        out[k] = float(v) if k in ("rateWindow", "delayMs", "storageDelayMs") else v
    return out


def missing_endpoint(status):
    """What a deployment without an endpoint answers: 404, 405 or 410."""
    return HttpError(status, {404: "The requested resource could not be found.",
                              405: "Method Not Allowed: this deployment has no such call.",
                              410: "Gone: this endpoint is no longer available."}[status])


def client_of(user_agent):
    """Who made a request: "agent" for civis-agent's User-Agent (civis-agent/VERSION,
    lib/src/client.c), "user" for anything else (civis-python, curl...)."""
    return "agent" if (user_agent or "").startswith("civis-agent/") else "user"


class RateLimiter:
    """Civis's limit: at most `limit` requests per `window` seconds per API key,
    a sliding window over the requests it let through (a 429 uses no slot).
    Also counts, per client, the requests and 429s of each fixed window
    [t0 + i*window, t0 + (i+1)*window) since it was configured, and the most
    requests a client got through in any sliding window."""

    def __init__(self, limit=0, window=300.0):
        self.lock = threading.Lock()
        self.configure(limit, window)

    def configure(self, limit, window):
        with self.lock:
            self.limit, self.window = limit, window
            self.t0 = time.monotonic()
            self.used = {}          # key -> deque of monotonic times of requests let through
            self.clients = {}

    def take(self, key, client, user_agent, now=None):
        """Count one request. Returns None when no limit is set, else
        (allowed, limit, remaining, retry_after_seconds_or_None)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            c = self.clients.get(client)
            if c is None:
                c = self.clients[client] = {"requests": 0, "limited": 0, "windows": {},
                                            "recent": collections.deque(), "maxInWindow": 0,
                                            "userAgents": set()}
            c["requests"] += 1
            if len(c["userAgents"]) < 20:
                c["userAgents"].add(user_agent or "")
            w = c["windows"].setdefault(int((now - self.t0) // self.window), [0, 0])
            w[0] += 1
            verdict = None
            if self.limit > 0:
                dq = self.used.setdefault(key, collections.deque())
                while dq and dq[0] <= now - self.window:
                    dq.popleft()
                if len(dq) >= self.limit:
                    c["limited"] += 1
                    w[1] += 1
                    retry = max(1, int(math.ceil(dq[0] + self.window - now)))
                    return (False, self.limit, 0, retry)
                dq.append(now)
                verdict = (True, self.limit, self.limit - len(dq), None)
            rq = c["recent"]
            rq.append(now)
            while rq[0] <= now - self.window:
                rq.popleft()
            c["maxInWindow"] = max(c["maxInWindow"], len(rq))
            return verdict

    def report(self):
        now = time.monotonic()
        with self.lock:
            out = {"limit": self.limit, "window": self.window, "elapsed": now - self.t0,
                   "keys": {}, "clients": {}}
            for key, dq in self.used.items():
                n = sum(1 for t in dq if t > now - self.window)
                kid = "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
                out["keys"][kid] = {"used": n, "remaining": max(0, self.limit - n)}
            for name, c in self.clients.items():
                out["clients"][name] = {
                    "requests": c["requests"], "limited": c["limited"],
                    "maxInWindow": c["maxInWindow"], "userAgents": sorted(c["userAgents"]),
                    "windows": [{"index": i, "start": i * self.window, "requests": r, "limited": lim}
                                for i, (r, lim) in sorted(c["windows"].items())]}
            return out


# ------------------------------------------------------------------ state

class FileRec:
    def __init__(self, fid, name, expires_at, description, multipart, num_parts):
        self.id = fid
        self.name = name
        self.created_at = iso_ms()
        self.expires_at = expires_at
        self.description = description
        self.multipart = multipart
        self.num_parts = num_parts
        self.upload_id = sign("upload", fid, time.time_ns())[:32]
        self.key = "uploads/%d/%s" % (fid, name)
        self.fields = {}            # form: issued uploadFields
        self.size = None
        self.sha256 = None          # of the stored bytes (a multipart file's: when first asked)
        self.md5 = None             # S3's ETag value when MD5s were taken (etag "md5"), else None
        self.etag = None            # the ETag answered
        self.paths = []             # the stored bytes: these files, concatenated
        self.complete = False
        self.parts = {}             # n -> dict(size, etag, sha256, path, headers)
        self.uploads = []           # every upload request that stored data: headers, fields order
        self.lock = threading.Lock()

    def digest(self):
        """The SHA-256 of the stored bytes (hashed now if not yet: a completed
        multipart file, whose parts were hashed one by one, or any file stored
        with etag "opaque")."""
        with self.lock:
            if self.sha256 is None and self.paths and (self.complete or not self.multipart):
                sha = hashlib.sha256()
                for p in self.paths:
                    with open(p, "rb", buffering=0) as src:
                        buf = bytearray(RECV_CHUNK)
                        mv = memoryview(buf)
                        while True:
                            n = src.readinto(buf)
                            if not n:
                                break
                            sha.update(mv[:n])
                self.sha256 = sha.hexdigest()
            return self.sha256

    def public(self):
        sha = self.digest()
        return {
            "id": self.id, "name": self.name, "kind": "multipart" if self.multipart else "form",
            "createdAt": self.created_at, "expiresAt": self.expires_at,
            "description": self.description, "complete": self.complete,
            "fileSize": self.size if self.complete else None, "size": self.size,
            "sha256": sha, "md5": self.md5, "etag": self.etag, "numParts": self.num_parts,
            "uploadFields": self.fields,
            "parts": [{"n": n, "size": p["size"], "etag": p["etag"], "sha256": p["sha256"],
                       "md5": p["md5"], "headers": p["headers"]} for n, p in sorted(self.parts.items())],
            "uploads": self.uploads,
        }


class Run:
    def __init__(self, job, run):
        self.job = job
        self.run = run
        self.state = "running"
        self.is_cancel_requested = False
        self.created_at = iso_ms(time.time() - 2)
        self.started_at = iso_ms(time.time() - 1)
        self.finished_at = None
        self.error = None

    def public(self):
        return {"id": self.run, "containerId": self.job, "state": self.state,
                "isCancelRequested": self.is_cancel_requested, "createdAt": self.created_at,
                "startedAt": self.started_at, "finishedAt": self.finished_at,
                "error": self.error, "maxMemoryUsage": None, "maxCpuUsage": None}


class Sim:
    def __init__(self, api_key, job_id, run_id, data_dir, verbose=False, config=None):
        self.api_key = api_key
        self.initial_config = dict(CONFIG_DEFAULTS, **check_config(config or {}))
        self.config = dict(self.initial_config)
        self.rate = RateLimiter()
        self.job_id = job_id
        self.run_id = run_id
        self.data_dir = data_dir
        self.verbose = verbose
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.faults = FaultPlan()
        self.stopping = threading.Event()
        self.listeners = {}
        self.reset()

    def reset(self):
        with self.lock:
            self.logs = []          # (id, createdAt, level, message, requestSeq, job, run)
            self.heartbeats = []    # (monotonic, wall, job, run, requestSeq)
            self.heartbeats_refused = 0
            self.patches = []       # every PATCH of a run: time, jobId, runId, body, requestSeq, status
            self.files = {}
            self.keys = {}
            self.outputs = []       # every registration call
            self.json_values = {}   # id -> dict(id, name, value, valueStr, size, createdAt, requestSeq)
            self.next_json_value = 7001
            self.objects = {t: {"known": {}, "unknown": set(), "strict": False}
                            for t in OBJECT_TYPES if t not in OWN_TYPES}
            self.requests = []
            self.violations = []
            self.runs = {}
            self.req_seq = 0
            self.next_file = 1001
            self.cond.notify_all()
        self.faults.set([])
        self.configure(self.initial_config, replace=True)
        if not hasattr(self, "spares"):
            self.spares = SparePool(os.path.join(self.data_dir, "spare"))
        for d in ("tmp", "files"):
            p = os.path.join(self.data_dir, d)
            for name in os.listdir(p) if os.path.isdir(p) else ():
                self.spares.give(os.path.join(p, name))
            shutil.rmtree(p, ignore_errors=True)
            os.makedirs(p, exist_ok=True)

    def tmp_path(self, tag):
        fd, p = tempfile.mkstemp(prefix=tag + "-", dir=os.path.join(self.data_dir, "tmp"))
        os.close(fd)
        return p

    def data_sink(self, tag, length):
        """A DataSink for an upload of `length` bytes: into a spare file of about
        that size when there is one (SparePool), else a new temp file."""
        p = self.tmp_path(tag)
        reused = length >= SPARE_MIN and self.spares.take(length, p)
        return DataSink(p, self.upload_hashes(), inline=length <= RECV_CHUNK, reuse=reused)

    def discard_file(self, path):
        """A stored or staged file no longer needed: kept for reuse or deleted."""
        self.spares.give(path)

    def run_for(self, job, run, create=True):
        if (self.job_id is not None and job != self.job_id) or \
           (self.run_id is not None and run != self.run_id):
            return None
        r = self.runs.get((job, run))
        if r is None and create:
            r = self.runs[(job, run)] = Run(job, run)
        return r

    def configure(self, changes, replace=False):
        """Apply settings (see CONFIG_DEFAULTS); a change of rateLimit or rateWindow
        (or replace=True) starts the rate counts afresh."""
        changes = check_config(changes)
        with self.lock:
            old = self.config
            self.config = dict(CONFIG_DEFAULTS if replace else old, **changes)
            new = self.config
        if replace or (new["rateLimit"], new["rateWindow"]) != (old["rateLimit"], old["rateWindow"]):
            self.rate.configure(new["rateLimit"], new["rateWindow"])
        return dict(new)

    def upload_hashes(self):
        """The hashes an upload takes while it arrives: SHA-256 (the byte-exact
        check), MD5 too when the ETag is S3's (etag "md5"); none for etag
        "opaque" (the SHA-256 is taken from the stored bytes when first asked)."""
        kind = self.config["etag"]
        return ("sha256", "md5") if kind == "md5" else () if kind == "opaque" else ("sha256",)

    def output_object(self, ot, oid):
        """(name, value) of the object a run output names; HttpError 404 when it does
        not exist. Files and JSON values are the simulator's own; other types exist
        unless /_sim/objects declared the id unknown (or the type strict and the
        id not known). Called with the lock held."""
        if ot == "File":
            f = self.files.get(oid)
            if f is None:
                raise HttpError(404, "The requested resource could not be found.")
            return f.name, None
        if ot == "JSONValue":
            jv = self.json_values.get(oid)
            if jv is None:
                raise HttpError(404, "The requested resource could not be found.")
            return jv["name"], jv["value"]
        reg = self.objects[ot]
        if oid in reg["unknown"] or (reg["strict"] and oid not in reg["known"]):
            raise HttpError(404, "The requested resource could not be found.")
        return reg["known"].get(oid), None

    def violation(self, rec, kind, detail):
        with self.lock:
            self.violations.append({"time": time.time(), "server": rec["server"],
                                    "method": rec["method"], "path": rec["path"],
                                    "requestSeq": rec["seq"], "kind": kind, "detail": detail})

    def counts(self):
        with self.lock:
            return self.counts_locked()

    def counts_locked(self):
        return {"logs": len(self.logs), "heartbeats": len(self.heartbeats),
                "files": len(self.files),
                "filesComplete": sum(1 for f in self.files.values() if f.complete),
                "outputs": len(self.outputs), "requests": len(self.requests),
                "violations": len(self.violations), "jsonValues": len(self.json_values),
                "heartbeatsRefused": self.heartbeats_refused, "patches": len(self.patches)}


# ------------------------------------------------------------------ multipart/form-data

def parse_disposition(value):
    params = {}
    for m in DISPO_PARAM_RE.finditer(";" + value.split(";", 1)[1] if ";" in value else ""):
        v = m.group(2).strip()
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = re.sub(r'\\(.)', r'\1', v[1:-1])
        params[m.group(1).lower()] = v
    return value.split(";", 1)[0].strip().lower(), params


class BufferPool:
    """Reusable receive buffers of RECV_CHUNK bytes (allocating and zeroing a
    fresh one per request would cost more than the bytes of a small upload)."""

    def __init__(self, size, keep=16):
        self.size = size
        self.keep = keep
        self.lock = threading.Lock()
        self.free = []

    def get(self):
        with self.lock:
            if self.free:
                return self.free.pop()
        return bytearray(self.size)

    def put(self, b):
        with self.lock:
            if len(self.free) < self.keep:
                self.free.append(b)


POOL = BufferPool(RECV_CHUNK)


class SparePool:
    """Stored files given back for reuse. Overwriting the pages of an existing file
    costs a fraction of allocating new ones: on this VM's ext4 (mounted with
    discard), 0.14-0.27 s of system time per GiB against 0.6-3.2 s for a new file,
    the difference between a simulator that is and is not the ceiling of an upload
    bench that sends the same sizes round after round (a reset gives the files back)."""

    def __init__(self, d, cap=SPARE_CAP):
        self.dir = d
        self.cap = cap
        self.lock = threading.Lock()
        self.items = []             # (size, path)
        self.total = 0
        self.n = 0
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d, exist_ok=True)

    def give(self, path):
        try:
            size = os.path.getsize(path)
        except OSError:
            return
        with self.lock:
            if SPARE_MIN <= size and self.total + size <= self.cap:
                self.n += 1
                dest = os.path.join(self.dir, "spare-%d" % self.n)
                try:
                    os.rename(path, dest)
                except OSError:
                    return
                self.items.append((size, dest))
                self.total += size
                return
        try:
            os.unlink(path)
        except OSError:
            pass

    def take(self, want, dest):
        """Move the spare that fits `want` bytes best (the smallest at least that
        big, else the biggest) to dest. False when there is none."""
        with self.lock:
            if not self.items:
                return False
            fit = [it for it in self.items if it[0] >= want]
            it = min(fit) if fit else max(self.items)
            self.items.remove(it)
            self.total -= it[0]
        try:
            os.replace(it[1], dest)
        except OSError:
            return False
        return True


class FieldSink:
    """A non-file form field: its bytes in memory, at most `cap`."""
    path = None

    def __init__(self, cap=FIELD_CAP):
        self.cap = cap
        self.size = 0
        self.buf = bytearray()

    def buffer(self):
        return POOL.get()

    def release(self, b):
        POOL.put(b)

    def write(self, mv):
        self.size += len(mv)
        if self.size > self.cap:
            raise HttpError(400, "form field too long", "MaxMessageLengthExceeded")
        self.buf += mv

    def close(self):
        pass


class DataSink:
    """Where an upload's bytes go: a file (written from the request's thread, no
    copy: the slices of the receive buffer go to os.write) and its hashes, each in
    a thread of its own (hashlib drops the GIL on big updates, so the socket reads,
    the file writes and the hashes run in parallel). A receive buffer goes back to
    the pool once every hash has taken it; at most RING_DEPTH buffers per upload
    are in flight. `hashes`: ("sha256",) or ("sha256", "md5"). Bodies of at most
    one buffer (`inline`) are hashed in the request's thread: no thread start."""

    def __init__(self, path, hashes=("sha256", "md5"), inline=False, reuse=False):
        self.path = path
        self.size = 0
        self.h = {n: hashlib.new(n) for n in hashes}
        # a reused file is overwritten in place (its pages exist) and cut at close
        self.reuse = reuse
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (0 if reuse else os.O_TRUNC),
                          0o600)
        self.slots = threading.Semaphore(RING_DEPTH)
        self.pending = {}           # id(buffer) -> hashes still to take it
        self.plock = threading.Lock()
        self.queues = []
        self.workers = []
        if not inline:
            for h in self.h.values():
                q = queue.Queue()
                t = threading.Thread(target=self._hash_loop, args=(h, q), daemon=True)
                t.start()
                self.queues.append(q)
                self.workers.append(t)

    def _hash_loop(self, h, q):
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, memoryview):
                h.update(item)
            else:
                self._taken(item)

    def _taken(self, b):
        with self.plock:
            left = self.pending[id(b)] - 1
            if left:
                self.pending[id(b)] = left
                return
            del self.pending[id(b)]
        POOL.put(b)
        self.slots.release()

    def buffer(self):
        self.slots.acquire()
        return POOL.get()

    def write(self, mv):
        n = len(mv)
        if not n:
            return
        self.size += n
        if self.fd >= 0:
            off = 0
            while off < n:
                off += os.write(self.fd, mv[off:])
        if self.queues:
            for q in self.queues:
                q.put(mv)
        else:
            for h in self.h.values():
                h.update(mv)

    def release(self, b):
        """The request's thread is done with buffer b (its slices were written)."""
        if not self.queues:
            POOL.put(b)
            self.slots.release()
            return
        with self.plock:
            self.pending[id(b)] = len(self.queues)
        for q in self.queues:
            q.put(b)

    def close(self):
        for q in self.queues:
            q.put(None)
        for t in self.workers:
            t.join()
        self.queues, self.workers = [], []
        if self.fd >= 0:
            try:
                if self.reuse:
                    os.ftruncate(self.fd, self.size)
            finally:
                os.close(self.fd)
                self.fd = -1

    def hexdigest(self, name):
        return self.h[name].hexdigest() if name in self.h else None

    def etag(self):
        """S3's ETag of a single upload is the MD5; without MD5, the first 32 hex
        digits of the SHA-256 stand in (same shape, one hash pass less); with
        no hash (etag "opaque"), a token unique to this upload, as S3 promises
        no MD5 for every kind of upload either."""
        if not self.h:
            return uuid.uuid4().hex
        return self.hexdigest("md5") or self.hexdigest("sha256")[:32]


def pump_body(rfile, length, sink):
    """Exactly `length` bytes of the request body into sink, a buffer at a time."""
    left = length
    while left > 0:
        b = sink.buffer()
        try:
            mv = memoryview(b)
            n = rfile.readinto(mv[:min(left, len(b))])
            if not n:
                raise ClientGone()
            left -= n
            sink.write(mv[:n])
        finally:
            sink.release(b)


class FormParser:
    """A multipart/form-data body of exactly `length` bytes, parsed as it arrives,
    never held whole. Headers and small fields go through `buf` (reads of
    FORM_READ bytes); a part's data goes through pooled receive buffers straight
    into its sink (readinto, find, slices: no per-byte Python work, no copy but
    the carry-over of a possible split delimiter)."""

    def __init__(self, rfile, length, boundary, new_sink, discard=os.unlink):
        self.rfile = rfile
        self.discard = discard
        self.remaining = length
        self.delim = b"\r\n--" + boundary
        self.keep = len(self.delim) + 1
        self.buf = bytearray(b"\r\n")
        self.new_sink = new_sink

    def fill(self):
        if self.remaining <= 0:
            return False
        chunk = self.rfile.read(min(FORM_READ, self.remaining))
        if not chunk:
            raise ClientGone()
        self.remaining -= len(chunk)
        self.buf.extend(chunk)
        return True

    def need(self, n):
        while len(self.buf) < n:
            if not self.fill():
                raise HttpError(400, "form body ends early", "IncompleteBody")

    def skip_preamble(self):
        buf = self.buf
        while True:
            i = buf.find(self.delim)
            if i >= 0:
                del buf[:i + len(self.delim)]
                return
            if len(buf) > self.keep:
                del buf[:len(buf) - self.keep]
            if not self.fill():
                raise HttpError(400, "no multipart boundary in the body", "MalformedPOSTRequest")

    def part_headers(self):
        """After a delimiter: None at the closing "--", else (name, filename)."""
        buf = self.buf
        self.need(2)
        if buf[:2] == b"--":
            return None
        while buf[:1] in (b" ", b"\t"):
            del buf[:1]
            self.need(2)
        if buf[:2] != b"\r\n":
            raise HttpError(400, "bad multipart delimiter line", "MalformedPOSTRequest")
        del buf[:2]
        while True:
            j = buf.find(b"\r\n\r\n")
            if j >= 0:
                break
            if len(buf) > HEADER_BLOCK_CAP:
                raise HttpError(400, "form part headers too long", "MalformedPOSTRequest")
            if not self.fill():
                raise HttpError(400, "form part headers end early", "MalformedPOSTRequest")
        hdr = bytes(buf[:j]).decode("utf-8", "replace")
        del buf[:j + 4]
        name = filename = None
        for line in hdr.split("\r\n"):
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-disposition":
                kind, params = parse_disposition(v.strip())
                if kind != "form-data":
                    raise HttpError(400, "part is not form-data", "MalformedPOSTRequest")
                name = params.get("name")
                filename = params.get("filename")
        if name is None:
            raise HttpError(400, "form part without a name", "MalformedPOSTRequest")
        return name, filename

    def pump_part(self, sink):
        """The part's bytes up to the next delimiter into sink; what follows the
        delimiter stays in buf."""
        buf, delim = self.buf, self.delim
        while True:
            b = sink.buffer()
            try:
                mv = memoryview(b)
                n = len(buf)
                if n >= len(b):     # cannot be: what is left of one buffer, or of the headers
                    raise HttpError(400, "form part too long before its data", "MalformedPOSTRequest")
                mv[:n] = buf
                buf.clear()
                want = min(len(b) - n, self.remaining)
                if want > 0:
                    got = self.rfile.readinto(mv[n:n + want])
                    if not got:
                        raise ClientGone()
                    self.remaining -= got
                    n += got
                i = b.find(delim, 0, n)
                if i >= 0:
                    sink.write(mv[:i])
                    buf.extend(mv[i + len(delim):n])
                    return
                if want <= 0:
                    raise HttpError(400, "form part not terminated", "IncompleteBody")
                cut = max(0, n - self.keep)
                sink.write(mv[:cut])
                buf.extend(mv[cut:n])
            finally:
                sink.release(b)

    def parse(self):
        """[(name, filename, value_bytes_or_None, sink_or_None)], in order. A part
        with a filename (or named 'file') goes to new_sink()'s DataSink."""
        parts, sinks = [], []
        try:
            self.skip_preamble()
            while True:
                h = self.part_headers()
                if h is None:
                    break
                name, filename = h
                if len(parts) >= 100:
                    raise HttpError(400, "too many form fields", "MalformedPOSTRequest")
                is_file = filename is not None or name == "file"
                sink = self.new_sink() if is_file else FieldSink()
                sinks.append(sink)
                self.pump_part(sink)
                sink.close()
                parts.append((name, filename, None if is_file else bytes(sink.buf),
                              sink if is_file else None))
            while self.remaining > 0:     # epilogue
                self.buf.clear()
                self.fill()
            return parts
        except BaseException:
            for s in sinks:
                s.close()
                if s.path:
                    self.discard(s.path)
            raise


# ------------------------------------------------------------------ HTTP side

class Listener:
    """One side (api or storage): a ThreadingHTTPServer that can be closed and reopened
    on the same port (refuse faults), tracking its open connections."""

    def __init__(self, sim, side, host, port):
        self.sim = sim
        self.side = side
        self.host = host
        self.port = port
        self.server = None
        self.thread = None
        self.conns = set()
        self.lock = threading.Lock()
        self.down_until = 0.0
        self.timer = None

    def start(self):
        deadline = time.monotonic() + 10
        while True:
            try:
                srv = SimServer((self.host, self.port), Handler)
                break
            except OSError:
                if self.port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        srv.sim = self.sim
        srv.side = self.side
        srv.listener = self
        self.port = srv.server_address[1]
        self.server = srv
        self.thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="sim-" + self.side, daemon=True)
        self.thread.start()

    def stop(self):
        srv, self.server = self.server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()

    def drop_connections(self, keep=None):
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            if c is keep:
                continue
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def refuse(self, seconds, keep=None):
        """Close the listening socket for `seconds` (connects get ECONNREFUSED)."""
        with self.lock:
            until = time.monotonic() + seconds
            was_down = self.down_until > time.monotonic()
            self.down_until = max(self.down_until, until)
            if self.timer is not None:
                self.timer.cancel()
            self.timer = threading.Timer(self.down_until - time.monotonic(), self.reopen)
            self.timer.daemon = True
        if not was_down:
            self.stop()
        self.drop_connections(keep)
        self.timer.start()

    def reopen(self):
        with self.lock:
            if self.sim.stopping.is_set() or self.server is not None:
                return
            self.down_until = 0.0
            self.timer = None
        self.start()


class FastHeaders:
    """A request's headers as the handler reads them: the first value of each
    name, looked up without case; items() in the order sent, names as sent."""
    __slots__ = ("_items", "_d")

    def __init__(self, items):
        self._items = items
        d = {}
        for k, v in items:
            d.setdefault(k.lower(), v)
        self._d = d

    def get(self, name, default=None):
        return self._d.get(name.lower(), default)

    def __getitem__(self, name):
        return self._d.get(name.lower())

    def __contains__(self, name):
        return name.lower() in self._d

    def items(self):
        return list(self._items)

    def keys(self):
        return [k for k, _ in self._items]

    def values(self):
        return [v for _, v in self._items]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._items)


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "civis-sim/1"
    disable_nagle_algorithm = True
    timeout = 120

    # ---------------------------------------------------------- plumbing

    def parse_request(self):
        """The stdlib's parse_request (HTTP/1.0 and 1.1 only), but with its own
        header reader: http.client's goes through the email package, 34-43 us
        for an agent's request headers against 4-6 us here, about a tenth of
        the simulator's CPU per small request (~330 us)."""
        self.command = None
        self.request_version = "HTTP/1.0"   # errors before the version is known get a status line
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3:
            self.send_error(400, "Bad request syntax (%r)" % self.requestline)
            return False
        command, path, version = words
        major, _, minor = version[5:].partition(".")
        if not version.startswith("HTTP/") or not major.isdigit() or not minor.isdigit() \
                or len(major) > 3 or len(minor) > 3:
            self.send_error(400, "Bad request version (%r)" % version)
            return False
        if int(major) >= 2:
            self.send_error(505, "Invalid HTTP version (%s)" % version)
            return False
        if (int(major), int(minor)) >= (1, 1):
            self.close_connection = False
        self.command, self.path, self.request_version = command, path, version
        if path.startswith("//"):
            self.path = "/" + path.lstrip("/")
        items = []
        while True:
            line = self.rfile.readline(65537)
            if len(line) > 65536 or len(items) > 100:
                self.send_error(431, "Request header fields too large")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            text = line.decode("iso-8859-1")
            if text[:1] in (" ", "\t") and items:       # an obsolete folded line
                items[-1] = (items[-1][0], (items[-1][1] + " " + text.strip()).strip())
                continue
            k, _, v = text.partition(":")
            items.append((k.strip(), v.strip()))
        self.headers = FastHeaders(items)
        conntype = self.headers.get("Connection", "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive":
            self.close_connection = False
        if self.headers.get("Expect", "").lower() == "100-continue" and \
                self.request_version >= "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def setup(self):
        super().setup()
        with self.server.listener.lock:
            self.server.listener.conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.listener.lock:
                self.server.listener.conns.discard(self.connection)

    def log_message(self, fmt, *args):
        if self.server.sim.verbose:
            sys.stderr.write("civis-sim %s: %s\n" % (self.server.side, fmt % args))

    def send_raw(self, reply, close=False, content_length=None):
        rec = getattr(self, "rec", None)
        if rec is not None:     # the latency setting: each handler thread waits on its own
            sim = self.server.sim
            ms = sim.config["storageDelayMs" if rec["side"] == "storage" else "delayMs"]
            if ms > 0:
                sim.stopping.wait(ms / 1000.0)
        status = reply.status
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status")),
                 "Server: civis-sim/1",
                 "Date: " + self.date_time_string()]
        if getattr(self, "rec", None) is not None:
            lines.append("X-Request-Id: sim-%d" % self.rec["seq"])
        if reply.ctype:
            lines.append("Content-Type: " + reply.ctype)
        for k, v in reply.headers:
            lines.append("%s: %s" % (k, v))
        for k, v in getattr(self, "rate_headers", None) or ():
            lines.append("%s: %s" % (k, v))
        if status >= 200 and status not in (204, 304):
            lines.append("Content-Length: %d" % (len(reply.body) if content_length is None
                                                 else content_length))
        if close:
            lines.append("Connection: close")
            self.close_connection = True
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if status not in (204, 304):
            data += reply.body
        self.wfile.write(data)
        self.wfile.flush()
        if getattr(self, "rec", None) is not None:
            self.rec["status"] = status

    def read_body(self, cap):
        te = self.headers.get("Transfer-Encoding", "").lower()
        cl = self.headers.get("Content-Length")
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ClientGone()
                try:
                    n = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise HttpError(400, "bad chunk size line")
                if n == 0:
                    while True:
                        t = self.rfile.readline(8192)
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    return bytes(out)
                if len(out) + n > cap:
                    self.close_connection = True
                    raise HttpError(413, "request body over %d bytes" % cap)
                data = self.rfile.read(n)
                if len(data) != n:
                    raise ClientGone()
                out += data
                self.rfile.readline(16)
        if cl is None:
            return b""
        n = self.content_length()
        if n > cap:
            self.close_connection = True
            raise HttpError(413, "request body over %d bytes" % cap)
        data = self.rfile.read(n) if n else b""
        if len(data) != n:
            raise ClientGone()
        return data

    def content_length(self):
        cl = self.headers.get("Content-Length")
        if cl is None:
            return None
        if not cl.strip().isdigit() or len(cl.strip()) > 15:
            self.close_connection = True
            raise HttpError(400, "bad Content-Length")
        return int(cl.strip())

    def discard_body(self):
        n = self.content_length()
        if n is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self.close_connection = True
            return
        while n > 0:
            d = self.rfile.read(min(CHUNK, n))
            if not d:
                raise ClientGone()
            n -= len(d)

    def masked_headers(self):
        out = {}
        for k, v in self.headers.items():
            if k.lower() in ("authorization", "proxy-authorization"):
                v = v.split(" ", 1)[0] + " <redacted>"
            out[k] = v
        return out

    def auth_state(self):
        a = self.headers.get("Authorization")
        if a is None:
            return "none"
        scheme, _, cred = a.partition(" ")
        sim = self.server.sim
        if scheme.lower() == "basic":
            try:
                dec = base64.b64decode(cred.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return "basic-bad"
            return "basic-ok" if dec == sim.api_key + ":" else "basic-bad"
        if scheme.lower() == "bearer":
            return "bearer-ok" if cred.strip() == sim.api_key else "bearer-bad"
        return "other"

    # ---------------------------------------------------------- dispatch

    def do_any(self):
        sim = self.server.sim
        self.rec = None
        self.rate_headers = None
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        try:
            if path.startswith("/_sim/"):
                body = self.read_body(API_BODY_CAP)
                reply = control(self, sim, path, query, body)
                if reply is not None:   # None: control() answered itself (file data)
                    self.send_raw(reply)
                return
            side = self.server.side
            if side == "api" and path.startswith("/s3/"):
                side = "storage"
            part = None
            if "partNumber" in query and query["partNumber"][0].isdigit():
                part = int(query["partNumber"][0])
            with sim.lock:
                sim.req_seq += 1
                self.rec = {"seq": sim.req_seq, "server": self.server.side, "side": side,
                            "method": self.command, "path": path, "query": url.query,
                            "headers": self.masked_headers(), "auth": self.auth_state(),
                            "time": time.time(), "mono": time.monotonic(),
                            "status": None, "fault": None}
                sim.requests.append(self.rec)
            fault = sim.faults.match(side, self.command, path, part)
            if fault is not None:
                self.rec["fault"] = fault["id"]
                if fault.get("delay"):
                    sim.stopping.wait(fault["delay"])
                if fault["action"] == "delay" and fault.get("seconds"):
                    sim.stopping.wait(fault["seconds"])
            if side == "storage":
                self.storage(sim, path, query, fault)
            else:
                self.api(sim, path, query, fault)
        except ClientGone:
            self.close_connection = True
            if self.rec is not None:
                self.rec["status"] = -1
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except HttpError as e:
            if self.server.side == "storage" or path.startswith("/s3/"):
                self.send_raw(s3_err(e.status, e.code or S3_CODES.get(e.status, "InvalidRequest"),
                                     e.description, path), close=self.close_connection)
            else:
                self.send_raw(api_err(e.status, e.description, e.code), close=self.close_connection)
        finally:
            if self.rec is not None:
                self.rec["duration"] = time.monotonic() - self.rec["mono"]

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_any

    # ---------------------------------------------------------- fault answers

    def fault_answer(self, sim, fault, reply, storage=False):
        """Send what the fault says instead of (or made from) `reply`. Returns True
        when it answered (or cut) the request."""
        a = fault["action"]
        if a in ("delay",):
            return False
        if a == "refuse":
            self.close_connection = True
            threading.Thread(target=self.server.listener.refuse,
                             args=(fault.get("seconds", 2), None), daemon=True).start()
            self.rec["status"] = 0
            return True
        if a == "cut":
            self.close_connection = True
            self.rec["status"] = 0
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if a == "status":
            st = fault["status"]
            hdrs = list((fault.get("headers") or {}).items())
            if "retryAfter" in fault:
                hdrs.append(("Retry-After", str(fault["retryAfter"])))
            if st == 401 and not storage:
                hdrs.append(("WWW-Authenticate", 'Basic realm="Civis API"'))
            if "body" in fault:
                b = fault["body"]
                r = Reply(st, b.encode() if isinstance(b, str) else jdump(b), hdrs)
            elif storage:
                r = s3_err(st, fault.get("code") or S3_CODES.get(st, "InternalError"),
                           fault.get("message") or "simulated failure", self.path)
                r.headers = hdrs
            else:
                r = api_err(st, fault.get("message") or "simulated failure (%s)" % fault["id"],
                            fault.get("code"), hdrs)
            self.send_raw(r)
            return True
        if a == "malformed":
            k = fault["kind"]
            if k == "html502":
                self.send_raw(Reply(502, b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
                                         b"<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
                                         b"</body>\r\n</html>\r\n", ctype="text/html"))
            elif k == "truncated":
                body = reply.body if reply is not None and len(reply.body) > 2 else \
                    b'{"id":1001,"name":"trunc","uploadUrl":"http://127.0.0.1:1/x","uploadFields":{"key":"v'
                st = reply.status if reply is not None and reply.status != 204 else 200
                self.send_raw(Reply(st, body[:max(1, len(body) // 2)]))
            elif k == "empty200":
                self.send_raw(Reply(200, b""), content_length=0)
            elif k == "garbage":
                st = reply.status if reply is not None and reply.status != 204 else 200
                self.send_raw(Reply(st, jdump({"id": "not-a-number", "name": 17, "uploadUrl": 42,
                                               "uploadFields": [1, 2, 3], "uploadUrls": "nope",
                                               "state": {"x": 1}, "isCancelRequested": "yes"})))
            else:  # nonjson
                self.send_raw(Reply(200, b"\x00\xff\xfegarbage{{{", ctype="application/json"))
            return True
        if a == "hostile":
            return self.hostile(sim, fault, reply)
        return False

    def hostile(self, sim, fault, reply):
        k = fault["kind"]
        if k == "huge_length":
            body = b'{"id":1001,"name":"x"'
            self.send_raw(Reply(200, body), content_length=fault.get("length", 10 << 30), close=True)
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if k == "endless":
            self.close_connection = True
            self.rec["status"] = 200
            self.wfile.write(b"HTTP/1.1 200 OK\r\nServer: civis-sim/1\r\nContent-Type: "
                             b"application/json\r\nConnection: close\r\n\r\n[")
            chunk = b'{"id":1,"message":"endless","level":"info","createdAt":null},' * 1024
            limit = fault.get("maxBytes", 10 << 30)
            deadline = time.monotonic() + fault.get("seconds", 120)
            sent = 0
            try:
                while sent < limit and time.monotonic() < deadline and not sim.stopping.is_set():
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            self.rec["endlessBytes"] = sent
            return True
        if k == "deep_json":
            d = fault.get("depth", 100000)
            self.send_raw(Reply(reply.status if reply is not None and reply.status != 204 else 200,
                                b"[" * d + b"]" * d))
            return True
        if k == "huge_retry_after":
            st = fault.get("status", 503)
            self.send_raw(api_err(st, "simulated failure with a huge Retry-After",
                                  headers=[("Retry-After", str(fault.get("retryAfter", 999999999)))]))
            return True
        if k == "redirect":
            loc = fault.get("location") or "http://127.0.0.1:%d%s" % (
                sim.listeners["storage"].port, self.path)
            self.send_raw(Reply(fault.get("status", 302), b"", [("Location", loc)]))
            return True
        return False  # upload_url_to_api is applied by the route

    # ---------------------------------------------------------- API side

    def api(self, sim, path, query, fault):
        try:
            body = self.read_body(API_BODY_CAP)
        except HttpError as e:
            self.send_raw(api_err(e.status, e.description), close=self.close_connection)
            return
        auth = self.rec["auth"]
        if auth in ("basic-ok", "bearer-ok") and self.rate_limited(sim):
            return
        if fault is not None and not fault["_store"]:
            if self.fault_answer(sim, fault, None):
                return
        if auth not in ("basic-ok", "bearer-ok"):
            self.send_raw(api_err(401, "Invalid or missing credentials" if auth != "none"
                                  else "Authentication required", "unauthorized",
                                  [("WWW-Authenticate", 'Basic realm="Civis API"')]))
            return
        try:
            reply = self.api_route(sim, path, query, body, fault)
        except HttpError as e:
            reply = api_err(e.status, e.description, e.code)
        if fault is not None and self.fault_answer(sim, fault, reply):
            return
        self.send_raw(reply)

    def rate_limited(self, sim):
        """Count this request against the key's rate limit; when over it, answer
        429 and return True. Every answer then carries the X-RateLimit headers."""
        ua = self.headers.get("User-Agent", "")
        client = self.rec["client"] = client_of(ua)
        v = sim.rate.take(sim.api_key, client, ua)
        if v is None:
            return False
        allowed, limit, remaining, retry = v
        self.rate_headers = [("X-RateLimit-Limit", str(limit)), ("X-RateLimit-Remaining", str(remaining))]
        self.rec["rateRemaining"] = remaining
        if allowed:
            return False
        self.rec["rateLimited"] = True
        self.send_raw(api_err(429, "Rate limit exceeded: at most %d requests per %g seconds; "
                              "retry after %d s" % (limit, sim.rate.window, retry),
                              "too_many_requests", [("Retry-After", str(retry))]))
        return True

    def json_body(self, body, required=True):
        if not body:
            if required:
                raise HttpError(400, "a JSON body is required")
            return {}
        ct = self.headers.get("Content-Type", "")
        if not ct.lower().startswith("application/json"):
            self.server.sim.violation(self.rec, "content_type", "JSON body sent as %r" % ct)
            raise HttpError(415, "Content-Type must be application/json, not %r" % ct)
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise HttpError(400, "invalid JSON: %s" % e)
        if not isinstance(obj, dict):
            raise HttpError(400, "the JSON body must be an object")
        return obj

    def api_route(self, sim, path, query, body, fault):
        m = self.command
        seg = [s for s in path.split("/") if s]
        # /scripts/containers/{id}/runs[/{run_id}[/x]]
        if len(seg) >= 4 and seg[0] == "scripts" and seg[1] == "containers" and seg[3] == "runs":
            job = self.int_seg(seg[2])
            if len(seg) == 4:
                if m != "GET":
                    raise HttpError(405, "method not allowed")
                with sim.lock:
                    runs = [r.public() for (j, _), r in sorted(sim.runs.items()) if j == job]
                    if not runs:
                        r = sim.run_for(job, sim.run_id if sim.run_id is not None else 1)
                        runs = [r.public()] if r else []
                if not runs and sim.job_id is not None and job != sim.job_id:
                    raise HttpError(404, "The requested resource could not be found.")
                return api_reply(200, runs)
            run = self.int_seg(seg[4])
            with sim.lock:
                r = sim.run_for(job, run)
            if r is None:
                raise HttpError(404, "The requested resource could not be found.")
            sub = seg[5] if len(seg) == 6 else None
            if len(seg) > 6:
                raise HttpError(404, "no such route")
            if sub is None:
                return self.run_route(sim, r, body)
            if sub == "logs":
                return self.logs_route(sim, r, query, body)
            if sub == "heartbeats":
                if m != "POST":
                    raise HttpError(405, "method not allowed")
                missing = sim.config["heartbeatStatus"]
                if missing:
                    with sim.lock:
                        sim.heartbeats_refused += 1
                        sim.cond.notify_all()
                    raise missing_endpoint(missing)
                with sim.lock:
                    sim.heartbeats.append((time.monotonic(), time.time(), job, run, self.rec["seq"]))
                    sim.cond.notify_all()
                return Reply(204)
            if sub == "outputs":
                return self.outputs_route(sim, r, query, body)
            raise HttpError(404, "no such route")
        if seg == ["files"] and m == "POST":
            return self.files_post(sim, body, fault)
        if seg == ["files", "multipart"] and m == "POST":
            return self.multipart_post(sim, body, fault)
        if len(seg) == 4 and seg[:2] == ["files", "multipart"] and seg[3] == "complete" and m == "POST":
            return self.multipart_complete(sim, self.int_seg(seg[2]))
        if len(seg) == 2 and seg[0] == "files" and m == "GET":
            return self.file_get(sim, self.int_seg(seg[1]))
        if seg == ["json_values"] and m == "POST":
            return self.json_value_post(sim, body)
        if len(seg) == 2 and seg[0] == "json_values" and m == "GET":
            return self.json_value_get(sim, self.int_seg(seg[1]))
        raise HttpError(404, "no such route: %s %s" % (m, path))

    @staticmethod
    def int_seg(s):
        if not s.isdigit() or len(s) > 18:
            raise HttpError(404, "The requested resource could not be found.")
        return int(s)

    def run_route(self, sim, r, body):
        m = self.command
        if m == "GET":
            with sim.lock:
                return api_reply(200, r.public())
        if m == "DELETE":
            with sim.lock:
                r.is_cancel_requested = True
            return Reply(202)
        if m == "PATCH":
            return self.run_patch(sim, r, body)
        raise HttpError(405, "method not allowed")

    def run_patch(self, sim, r, body):
        """PATCH .../runs/{run_id}: every attempt is recorded with its answer's status."""
        rec = {"time": time.time(), "jobId": r.job, "runId": r.run, "body": None,
               "requestSeq": self.rec["seq"], "status": None}
        with sim.lock:
            sim.patches.append(rec)
            sim.cond.notify_all()
        try:
            missing = sim.config["runPatchStatus"]
            try:
                rec["body"] = json.loads(body) if body else None
            except (ValueError, RecursionError):
                pass
            if missing:
                raise missing_endpoint(missing)
            obj = self.json_body(body)
            for k in ("bocceAcceptedAt", "bocce_accepted_at", "bocceStartedAt", "bocce_started_at"):
                if k in obj and (not isinstance(obj[k], str) or not RFC3339_RE.match(obj[k])):
                    raise HttpError(400, "%s must be an ISO 8601 date-time" % k)
            if "state" in obj and obj["state"] not in ("queued", "running", "succeeded",
                                                       "failed", "cancelled"):
                raise HttpError(400, "invalid state %r" % (obj["state"],))
            with sim.lock:
                if "state" in obj:
                    r.state = obj["state"]
                    if obj["state"] in ("succeeded", "failed", "cancelled"):
                        r.finished_at = iso_ms()
        except HttpError as e:
            rec["status"] = e.status
            raise
        rec["status"] = 204
        return Reply(204)

    def logs_route(self, sim, r, query, body):
        if self.command == "GET":
            try:
                last_id = int(query["last_id"][0]) if "last_id" in query else None
                limit = int(query["limit"][0]) if "limit" in query else LOG_LIMIT_DEFAULT
            except ValueError:
                raise HttpError(400, "last_id and limit must be integers")
            limit = max(0, min(limit, LOG_LIMIT_DEFAULT))
            with sim.lock:
                rows = [t for t in sim.logs if t[5] == r.job and t[6] == r.run]
            if last_id is not None:
                rows = [t for t in rows if t[0] > last_id]
            else:
                rows.sort(key=lambda t: (created_at_key(t[1]), t[0]))
            return api_reply(200, [{"id": t[0], "createdAt": t[1], "message": t[3],
                                    "level": t[2]} for t in rows[:limit]])
        if self.command != "POST":
            raise HttpError(405, "method not allowed")
        obj = self.json_body(body, required=False)
        msgs = obj.get("messages")
        if msgs is None:
            if "message" not in obj:
                raise HttpError(400, "message or messages is required")
            msgs = [{"message": obj["message"], "level": obj.get("level", "info")}]
        if not isinstance(msgs, list):
            raise HttpError(400, "messages must be an array")
        now = None
        rows = []
        seq, job, run = self.rec["seq"], r.job, r.run
        match = RFC3339_RE.match
        for m in msgs:
            if type(m) is not dict:
                raise HttpError(400, "each message must be an object")
            msg = m.get("message")
            if type(msg) is not str:
                raise HttpError(400, "message must be a string")
            lvl = m.get("level", "info")
            if type(lvl) is not str:
                raise HttpError(400, "level must be a string")
            ca = m.get("createdAt")
            if ca is None:
                ca = m.get("created_at")
            if ca is None:
                if now is None:
                    now = iso_ns_now()
                ca = now
            elif type(ca) is not str or not match(ca):
                raise HttpError(400, "createdAt must be an ISO 8601 date-time: %r" % (ca,))
            rows.append((ca, lvl, msg))
        with sim.lock:
            base = len(sim.logs) + 1
            sim.logs.extend((base + i, ca, lvl, msg, seq, job, run)
                            for i, (ca, lvl, msg) in enumerate(rows))
            sim.cond.notify_all()
        self.rec["logCount"] = len(rows)
        return Reply(204)

    def outputs_route(self, sim, r, query, body):
        if self.command == "GET":
            with sim.lock:
                seen, out = set(), []
                for o in sim.outputs:
                    if (o["jobId"], o["runId"]) != (r.job, r.run):
                        continue
                    k = (o["objectType"], o["objectId"])
                    if k not in seen:
                        seen.add(k)
                        out.append(o["answer"])
            return api_reply(200, out)
        if self.command != "POST":
            raise HttpError(405, "method not allowed")
        obj = self.json_body(body)
        ot = obj.get("objectType", obj.get("object_type"))
        oid = obj.get("objectId", obj.get("object_id"))
        if ot not in OBJECT_TYPES:
            raise HttpError(400, "objectType must be one of %s" % ", ".join(OBJECT_TYPES))
        if type(oid) is not int:
            raise HttpError(400, "objectId must be an integer")
        with sim.lock:
            name, value = sim.output_object(ot, oid)
            answer = {"objectType": ot, "objectId": oid, "name": name,
                      "link": "api.civis.test/%s/%d" % (LINK_PATHS[ot], oid), "value": value}
            sim.outputs.append({"time": time.time(), "jobId": r.job, "runId": r.run,
                                "objectType": ot, "objectId": oid, "requestSeq": self.rec["seq"],
                                "answer": answer})
            sim.cond.notify_all()
        return api_reply(202, answer)

    def json_value_post(self, sim, body):
        obj = self.json_body(body)
        vs = obj.get("valueStr", obj.get("value_str"))
        name = obj.get("name")
        if not isinstance(vs, str):
            raise HttpError(400, "valueStr must be a string holding serialized JSON")
        if name is not None and not isinstance(name, str):
            raise HttpError(400, "name must be a string")
        size = len(vs.encode("utf-8", "surrogatepass"))
        if size > JSON_VALUE_CAP:
            sim.violation(self.rec, "json_value_too_big", "valueStr is %d bytes" % size)
            raise HttpError(400, "valueStr is %d bytes; the limit is %d bytes" % (size, JSON_VALUE_CAP))
        try:
            value = json.loads(vs)
        except (ValueError, RecursionError) as e:
            raise HttpError(400, "valueStr is not valid JSON: %s" % e)
        with sim.lock:
            jid = sim.next_json_value
            sim.next_json_value += 1
            sim.json_values[jid] = {"id": jid, "name": name, "value": value, "valueStr": vs,
                                    "size": size, "createdAt": iso_ms(),
                                    "requestSeq": self.rec["seq"]}
            sim.cond.notify_all()
        return api_reply(201, {"id": jid, "name": name, "value": value})

    def json_value_get(self, sim, jid):
        with sim.lock:
            jv = sim.json_values.get(jid)
        if jv is None:
            raise HttpError(404, "The requested resource could not be found.")
        return api_reply(200, {"id": jv["id"], "name": jv["name"], "value": jv["value"]})

    def upload_base(self, sim, fault):
        if fault is not None and fault["action"] == "hostile" and fault["kind"] == "upload_url_to_api":
            return "http://127.0.0.1:%d/s3/%s" % (sim.listeners["api"].port, BUCKET)
        return "http://127.0.0.1:%d/%s" % (sim.listeners["storage"].port, BUCKET)

    def new_file(self, sim, obj, multipart, num_parts):
        name = obj.get("name")
        # the contract sets no rule on names; the cap is S3's key length
        if not isinstance(name, str) or not name or len(name.encode("utf-8", "surrogatepass")) > 1000:
            raise HttpError(400, "name must be a non-empty string of at most 1000 bytes")
        has_exp = "expiresAt" in obj or "expires_at" in obj
        exp = obj.get("expiresAt", obj.get("expires_at"))
        if exp is not None and (not isinstance(exp, str) or not RFC3339_RE.match(exp)):
            raise HttpError(400, "expiresAt must be an ISO 8601 date-time or null")
        if not has_exp:
            exp = iso_ms(time.time() + 30 * 86400)
        desc = obj.get("description")
        with sim.lock:
            fid = sim.next_file
            sim.next_file += 1
            f = FileRec(fid, name, exp, desc if isinstance(desc, str) else None, multipart, num_parts)
            sim.files[fid] = f
            sim.keys[f.key] = f
        return f

    def files_post(self, sim, body, fault):
        obj = self.json_body(body)
        f = self.new_file(sim, obj, False, None)
        date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        policy = base64.b64encode(jdump({
            "expiration": iso_ms(time.time() + 3600),
            "conditions": [{"bucket": BUCKET}, {"key": f.key}, {"success_action_status": "201"},
                           {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
                           {"x-amz-credential": CREDENTIAL}, {"x-amz-date": date},
                           ["content-length-range", 0, 5 << 30]]})).decode()
        f.fields = {"key": f.key, "success_action_status": "201",
                    "x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-credential": CREDENTIAL,
                    "x-amz-date": date, "policy": policy,
                    "x-amz-signature": sign("policy", policy)}
        return api_reply(201, {"id": f.id, "name": f.name, "createdAt": f.created_at,
                               "fileSize": None, "expiresAt": f.expires_at,
                               "description": f.description,
                               "uploadUrl": self.upload_base(sim, fault) + "/",
                               "uploadFields": f.fields, "myPermissionLevel": "manage"})

    def multipart_post(self, sim, body, fault):
        obj = self.json_body(body)
        n = obj.get("numParts", obj.get("num_parts"))
        if type(n) is not int or n < 1 or n > MAX_PARTS:
            raise HttpError(400, "numParts must be an integer from 1 to %d" % MAX_PARTS)
        f = self.new_file(sim, obj, True, n)
        date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        base = self.upload_base(sim, fault)
        qname = urllib.parse.quote(f.name, safe="")
        urls = []
        for i in range(1, n + 1):
            p = "/multipart/%d/%s" % (f.id, qname)
            q = urllib.parse.urlencode([
                ("partNumber", str(i)), ("uploadId", f.upload_id),
                ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"), ("X-Amz-Credential", CREDENTIAL),
                ("X-Amz-Date", date), ("X-Amz-Expires", "43200"),
                ("X-Amz-SignedHeaders", "host"),
                ("X-Amz-Signature", sign("part", f.id, f.name, i, f.upload_id))])
            urls.append(base + p + "?" + q)
        return api_reply(201, {"id": f.id, "name": f.name, "createdAt": f.created_at,
                               "fileSize": None, "expiresAt": f.expires_at,
                               "description": f.description, "uploadUrls": urls})

    def multipart_complete(self, sim, fid):
        with sim.lock:
            f = sim.files.get(fid)
        if f is None or not f.multipart:
            raise HttpError(404, "The requested resource could not be found.")
        with f.lock:
            if f.complete:
                return Reply(204)
            missing = [i for i in range(1, f.num_parts + 1) if i not in f.parts]
            if missing:
                sim.violation(self.rec, "complete_missing_parts", "parts %s not uploaded" % missing[:20])
                raise HttpError(400, "InvalidPart: part(s) %s of %d were not uploaded"
                                % (missing[:20], f.num_parts))
            for i in range(1, f.num_parts):
                if f.parts[i]["size"] < MIN_PART:
                    sim.violation(self.rec, "part_too_small",
                                  "part %d is %d bytes" % (i, f.parts[i]["size"]))
                    raise HttpError(400, "EntityTooSmall: part %d is %d bytes; every part but the "
                                    "last must be at least %d bytes" % (i, f.parts[i]["size"], MIN_PART))
            # the parts stay where they are (no copy of a big file): the stored
            # object is their concatenation; its SHA-256 is taken when first asked
            # for (FileRec.digest), not here, where the uploader would wait for it
            f.paths = [f.parts[i]["path"] for i in range(1, f.num_parts + 1)]
            f.size = sum(f.parts[i]["size"] for i in range(1, f.num_parts + 1))
            f.sha256 = None
            tags = b"".join(bytes.fromhex(f.parts[i]["etag"].strip('"'))
                            for i in range(1, f.num_parts + 1))
            f.etag = "%s-%d" % (hashlib.md5(tags).hexdigest(), f.num_parts)
            f.md5 = f.etag if all(f.parts[i]["md5"] for i in range(1, f.num_parts + 1)) else None
            f.complete = True
        with sim.lock:
            sim.cond.notify_all()
        return Reply(204)

    def file_get(self, sim, fid):
        with sim.lock:
            f = sim.files.get(fid)
        if f is None:
            raise HttpError(404, "The requested resource could not be found.")
        url = "http://127.0.0.1:%d/%s/download/%d?X-Amz-Signature=%s" % (
            sim.listeners["storage"].port, BUCKET, f.id, sign("download", f.id))
        return api_reply(200, {
            "id": f.id, "name": f.name, "createdAt": f.created_at,
            "fileSize": f.size if f.complete else None, "expiresAt": f.expires_at,
            "description": f.description,
            "author": {"id": 1, "name": "Sim User", "username": "sim", "initials": "SU",
                       "online": None},
            "downloadUrl": url, "fileUrl": url,
            "detectedInfo": {"includeHeader": None, "columnDelimiter": None,
                             "compression": None, "tableColumns": None},
            "myPermissionLevel": "manage"})

    # ---------------------------------------------------------- storage side

    def storage(self, sim, path, query, fault):
        m = self.command
        if "Authorization" in self.headers:
            sim.violation(self.rec, "authorization_to_storage",
                          "%s request to a presigned URL carried an Authorization header" % m)
            self.discard_body()
            self.send_raw(s3_err(400, "InvalidArgument",
                                 "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                                 "parameter, Signature query string parameter or the Authorization "
                                 "header should be specified", path), close=self.close_connection)
            return
        if m in ("POST", "PUT") and self.headers.get("Content-Length") is None:
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            sim.violation(self.rec, "missing_content_length",
                          "%s without Content-Length%s" % (m, " (chunked)" if chunked else ""))
            self.send_raw(s3_err(411, "MissingContentLength",
                                 "You must provide the Content-Length HTTP header.", path), close=True)
            return
        if fault is not None and not fault["_store"]:
            if fault["action"] not in ("cut", "refuse") and not fault.get("early"):
                self.discard_body()
            elif fault.get("early"):
                self.close_connection = True
            if self.fault_answer(sim, fault, None, storage=True):
                return
        seg = [s for s in path.split("/") if s]
        if seg and seg[0] == "s3":
            seg = seg[1:]
        if not seg or seg[0] != BUCKET:
            self.discard_body()
            self.send_raw(s3_err(404, "NoSuchBucket", "The specified bucket does not exist", path))
            return
        if m == "POST" and len(seg) == 1:
            reply = self.form_upload(sim, path)
        elif m == "PUT" and len(seg) == 4 and seg[1] == "multipart":
            reply = self.part_upload(sim, seg, query)
        elif m == "GET" and len(seg) == 3 and seg[1] == "download":
            self.download(sim, seg, query)
            return
        else:
            self.discard_body()
            reply = s3_err(405, "MethodNotAllowed",
                           "The specified method is not allowed against this resource.", path)
        if fault is not None and self.fault_answer(sim, fault, reply, storage=True):
            return
        self.send_raw(reply)

    def form_upload(self, sim, path):
        n = self.content_length()
        if n > MAX_FORM:
            self.discard_body()
            return s3_err(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", path)
        ctype = self.headers.get("Content-Type", "")
        mt = re.match(r'\s*multipart/form-data\s*;(.*)$', ctype, re.I)
        bm = re.search(r'boundary\s*=\s*("([^"]+)"|[^;\s]+)', mt.group(1)) if mt else None
        if not bm:
            self.discard_body()
            sim.violation(self.rec, "bad_form", "Content-Type %r is not multipart/form-data" % ctype)
            return s3_err(412, "PreconditionFailed",
                          "Bucket POST must be of the enclosure-type multipart/form-data", path)
        boundary = (bm.group(2) or bm.group(1)).encode("latin-1")
        if len(boundary) > 70:
            self.discard_body()
            return s3_err(400, "MalformedPOSTRequest", "boundary too long", path)
        parts = FormParser(self.rfile, n, boundary, lambda: sim.data_sink("form", n),
                           sim.discard_file).parse()
        tmp_paths = [p[3].path for p in parts if p[3] is not None]
        try:
            return self.form_check(sim, path, parts, tmp_paths)
        finally:
            for p in tmp_paths:
                if p and os.path.exists(p):
                    sim.discard_file(p)

    def form_check(self, sim, path, parts, tmp_paths):
        names = [p[0] for p in parts]
        files = [i for i, p in enumerate(parts) if p[3] is not None]
        if len(files) != 1:
            sim.violation(self.rec, "bad_form", "%d file fields" % len(files))
            return s3_err(400, "InvalidArgument", "POST requires exactly one file upload per request.", path)
        if files[0] != len(parts) - 1:
            sim.violation(self.rec, "file_not_last",
                          "fields after the file: %s" % names[files[0] + 1:])
            return s3_err(400, "InvalidArgument",
                          "The file must be the last field in the form; fields after it: %s"
                          % ", ".join(names[files[0] + 1:]), path)
        if len(set(names)) != len(names):
            sim.violation(self.rec, "bad_form", "duplicate fields")
            return s3_err(400, "InvalidArgument", "duplicate form fields", path)
        vals = {p[0]: p[2].decode("utf-8", "replace") for p in parts if p[3] is None}
        f = sim.keys.get(vals.get("key"))
        if "key" not in vals:
            sim.violation(self.rec, "missing_field", "key")
            return s3_err(400, "InvalidArgument", "Bucket POST must contain a field named 'key'.  If "
                          "it is specified, please check the order of the fields.", path)
        if f is None or f.multipart:
            return s3_err(403, "AccessDenied", "Invalid according to Policy: Policy Condition failed: "
                          '["eq", "$key", ...]', path)
        for k, v in f.fields.items():
            if k not in vals:
                sim.violation(self.rec, "missing_field", k)
                return s3_err(400, "InvalidArgument", "Bucket POST must contain a field named '%s'." % k, path)
            if vals[k] != v:
                sim.violation(self.rec, "field_mismatch", k)
                return s3_err(403, "AccessDenied", "Invalid according to Policy: Policy Condition "
                              "failed: [\"eq\", \"$%s\", ...]" % k, path)
        extra = [k for k in vals if k not in f.fields]
        if extra:
            sim.violation(self.rec, "extra_field", ",".join(extra))
            return s3_err(403, "AccessDenied", "Invalid according to Policy: Extra input fields: %s"
                          % ", ".join(extra), path)
        sink = parts[files[0]][3]
        dest = os.path.join(sim.data_dir, "files", str(f.id))
        with f.lock:
            os.replace(sink.path, dest)
            f.paths, f.size, f.sha256 = [dest], sink.size, sink.hexdigest("sha256")
            f.md5, f.etag = sink.hexdigest("md5"), sink.etag()
            f.complete = True
            f.uploads.append({"requestSeq": self.rec["seq"], "headers": self.rec["headers"],
                              "fields": names, "filename": parts[files[0]][1], "size": sink.size})
        with sim.lock:
            sim.cond.notify_all()
        etag = '"%s"' % f.etag
        loc = "http://127.0.0.1:%d/%s/%s" % (sim.listeners["storage"].port, BUCKET,
                                             urllib.parse.quote(f.key))
        if vals.get("success_action_status") == "201":
            return Reply(201, ('<?xml version="1.0" encoding="UTF-8"?>\n<PostResponse><Location>%s'
                               '</Location><Bucket>%s</Bucket><Key>%s</Key><ETag>%s</ETag>'
                               '</PostResponse>' % (xml_escape(loc), BUCKET, xml_escape(f.key),
                                                    xml_escape(etag))).encode(),
                         [("ETag", etag), ("Location", loc)], ctype="application/xml")
        return Reply(204, b"", [("ETag", etag), ("Location", loc)])

    def part_upload(self, sim, seg, query):
        path = self.rec["path"]
        fid = int(seg[2]) if seg[2].isdigit() and len(seg[2]) < 18 else -1
        with sim.lock:
            f = sim.files.get(fid)
        q = {k: v[0] for k, v in query.items()}
        if f is None or not f.multipart or q.get("uploadId") != f.upload_id:
            self.discard_body()
            return s3_err(404, "NoSuchUpload", "The specified upload does not exist.", path)
        pn = q.get("partNumber", "")
        n = int(pn) if pn.isdigit() and len(pn) < 6 else 0
        name = urllib.parse.unquote(seg[3])
        if name != f.name or q.get("X-Amz-Signature") != sign("part", f.id, f.name, n, f.upload_id):
            self.discard_body()
            sim.violation(self.rec, "bad_signature", "part URL was altered")
            return s3_err(403, "SignatureDoesNotMatch", "The request signature we calculated does not "
                          "match the signature you provided.", path)
        if not 1 <= n <= f.num_parts:
            self.discard_body()
            return s3_err(400, "InvalidArgument", "Part number must be an integer between 1 and %d"
                          % f.num_parts, path)
        length = self.content_length()
        if length > MAX_PART:
            self.discard_body()
            return s3_err(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", path)
        if f.complete:
            self.discard_body()
            return s3_err(404, "NoSuchUpload", "The specified upload does not exist.", path)
        sink = sim.data_sink("part", length)
        try:
            pump_body(self.rfile, length, sink)
        except BaseException:
            sink.close()
            sim.discard_file(sink.path)
            raise
        sink.close()
        etag = '"%s"' % sink.etag()
        with f.lock:
            old = f.parts.get(n)
            if old and os.path.exists(old["path"]):
                sim.discard_file(old["path"])
            f.parts[n] = {"size": sink.size, "etag": etag, "sha256": sink.hexdigest("sha256"),
                          "md5": sink.hexdigest("md5"), "path": sink.path,
                          "headers": self.rec["headers"]}
            f.uploads.append({"requestSeq": self.rec["seq"], "headers": self.rec["headers"],
                              "part": n, "size": sink.size})
        return Reply(200, b"", [("ETag", etag)])

    def download(self, sim, seg, query):
        fid = int(seg[2]) if seg[2].isdigit() and len(seg[2]) < 18 else -1
        with sim.lock:
            f = sim.files.get(fid)
        sig = query.get("X-Amz-Signature", [""])[0]
        if f is None or sig != sign("download", fid):
            self.send_raw(s3_err(403, "AccessDenied", "Access Denied", self.path))
            return
        self.send_file(f)

    def send_file(self, f):
        if not f.complete:
            self.send_raw(s3_err(404, "NoSuchKey", "The specified key does not exist.", self.path))
            return
        self.send_raw(Reply(200, b"", [("ETag", '"%s"' % f.etag)], ctype=None),
                      content_length=f.size)
        for p in f.paths:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, self.wfile, CHUNK)


# ------------------------------------------------------------------ control API

def qint(query, name, default, lo=0, hi=1 << 62):
    if name not in query:
        return default
    try:
        v = int(query[name][0])
    except ValueError:
        raise HttpError(400, "%s must be an integer" % name)
    return max(lo, min(v, hi))


def control(h, sim, path, query, body):
    """The control API: /_sim/<name> (no auth). Returns a Reply, or None when the
    handler answered itself (file data)."""
    c = path[len("/_sim/"):].rstrip("/")
    try:
        obj = json.loads(body) if body else {}
    except ValueError as e:
        return api_err(400, "invalid JSON: %s" % e)
    fm = re.match(r"^files/(\d{1,18})/data$", c)
    if fm:
        c, query = "files/data", dict(query, id=[fm.group(1)])
    fn = CONTROL.get((h.command, c))
    if fn is None:
        return api_err(404, "no such control endpoint: %s %s" % (h.command, path))
    try:
        return fn(h, sim, query, obj)
    except HttpError as e:
        return api_err(e.status, e.description)


def c_state(h, sim, query, obj):
    out = sim.counts()
    with sim.lock:
        out["runs"] = [r.public() for r in sim.runs.values()]
    out["faults"] = sim.faults.describe()
    out["ports"] = {k: v.port for k, v in sim.listeners.items()}
    with sim.spares.lock:
        out["spares"] = {"files": len(sim.spares.items), "bytes": sim.spares.total}
    return api_reply(200, out)


def c_logs(h, sim, query, obj):
    offset, limit = qint(query, "offset", 0), qint(query, "limit", 1 << 62)
    with sim.lock:
        rows = sim.logs[offset:offset + limit]
    if query.get("format", [""])[0] == "messages":
        return api_reply(200, [t[3] for t in rows])
    return api_reply(200, [{"id": t[0], "createdAt": t[1], "level": t[2], "message": t[3],
                            "requestSeq": t[4], "jobId": t[5], "runId": t[6]} for t in rows])


def c_heartbeats(h, sim, query, obj):
    offset, limit = qint(query, "offset", 0), qint(query, "limit", 1 << 62)
    with sim.lock:
        rows = sim.heartbeats[offset:offset + limit]
    return api_reply(200, [{"mono": t[0], "wall": t[1], "jobId": t[2], "runId": t[3],
                            "requestSeq": t[4]} for t in rows])


def c_files(h, sim, query, obj):
    with sim.lock:
        files = list(sim.files.values())
    return api_reply(200, [f.public() for f in files])


def c_file_data(h, sim, query, obj):
    with sim.lock:
        f = sim.files.get(int(query["id"][0]))
    if f is None:
        return api_err(404, "no such file")
    h.send_file(f)
    return None


def c_outputs(h, sim, query, obj):
    with sim.lock:
        return api_reply(200, [dict({k: v for k, v in o.items() if k != "answer"},
                                    name=o["answer"]["name"], link=o["answer"]["link"],
                                    value=o["answer"]["value"]) for o in sim.outputs])


def c_json_values(h, sim, query, obj):
    with sim.lock:
        return api_reply(200, [dict(v) for _, v in sorted(sim.json_values.items())])


def c_objects_get(h, sim, query, obj):
    with sim.lock:
        return api_reply(200, {t: {"known": [{"id": i, "name": n} for i, n in sorted(r["known"].items())],
                                   "unknown": sorted(r["unknown"]), "strict": r["strict"]}
                               for t, r in sim.objects.items()})


def c_objects_post(h, sim, query, obj):
    """{"objectType": "Table", "known": [7, {"id": 8, "name": "t"}], "unknown": [9],
    "strict": bool, "append": bool}: which ids of a type other than File and
    JSONValue a registration finds (default: every id, name null)."""
    if not isinstance(obj, dict) or obj.get("objectType") not in sim.objects:
        raise HttpError(400, "objectType must be one of %s" % ", ".join(sim.objects))
    known, unknown = {}, set()
    for k in obj.get("known", []):
        i, n = (k.get("id"), k.get("name")) if isinstance(k, dict) else (k, None)
        if type(i) is not int or (n is not None and not isinstance(n, str)):
            raise HttpError(400, "known: ids must be integers, names strings")
        known[i] = n
    for i in obj.get("unknown", []):
        if type(i) is not int:
            raise HttpError(400, "unknown: ids must be integers")
        unknown.add(i)
    with sim.lock:
        reg = sim.objects[obj["objectType"]]
        if not obj.get("append"):
            reg["known"], reg["unknown"], reg["strict"] = {}, set(), False
        reg["known"].update(known)
        reg["unknown"] |= unknown
        reg["unknown"] -= set(known)
        if "strict" in obj:
            reg["strict"] = bool(obj["strict"])
    return c_objects_get(h, sim, query, obj)


def c_requests(h, sim, query, obj):
    offset, limit = qint(query, "offset", 0), qint(query, "limit", 1 << 62)
    with sim.lock:
        rows = [dict(r) for r in sim.requests[offset:offset + limit]]
    srv = query.get("server", [None])[0]
    if srv:
        rows = [r for r in rows if r["side"] == srv]
    pre = query.get("path", [None])[0]
    if pre:
        rows = [r for r in rows if r["path"].startswith(pre)]
    return api_reply(200, rows)


def c_violations(h, sim, query, obj):
    with sim.lock:
        return api_reply(200, list(sim.violations))


def c_reset(h, sim, query, obj):
    sim.reset()
    return api_reply(200, {"ok": True})


def c_faults_get(h, sim, query, obj):
    return api_reply(200, sim.faults.describe())


def c_faults_post(h, sim, query, obj):
    faults = obj.get("faults", []) if isinstance(obj, dict) else obj
    if not isinstance(faults, list):
        raise HttpError(400, "faults must be a list")
    sim.faults.set(faults, append=bool(isinstance(obj, dict) and obj.get("append")))
    return api_reply(200, sim.faults.describe())


def c_run(h, sim, query, obj):
    if not isinstance(obj, dict):
        raise HttpError(400, "body must be an object")
    job = obj.get("jobId", sim.job_id)
    run = obj.get("runId", sim.run_id)
    with sim.lock:
        targets = [sim.run_for(job, run)] if job is not None and run is not None \
            else list(sim.runs.values())
        for r in targets:
            if r is None:
                continue
            if "state" in obj:
                r.state = obj["state"]
            if "isCancelRequested" in obj:
                r.is_cancel_requested = bool(obj["isCancelRequested"])
            if "error" in obj:
                r.error = obj["error"]
        out = [r.public() for r in targets if r is not None]
    return api_reply(200, out)


def c_refuse(h, sim, query, obj):
    side = obj.get("server", "api")
    secs = obj.get("seconds", 2)
    if side not in sim.listeners or not isinstance(secs, (int, float)):
        raise HttpError(400, "server must be api or storage; seconds a number")
    lst = sim.listeners[side]

    def later():
        sim.stopping.wait(float(obj.get("after", 0.05)))
        lst.refuse(float(secs))
    threading.Thread(target=later, daemon=True).start()
    return api_reply(200, {"ok": True}, [("Connection", "close")])


WAIT_COUNTS = ("logs", "heartbeats", "outputs", "requests", "files", "filesComplete", "jsonValues",
               "heartbeatsRefused", "patches", "violations")


def c_wait(h, sim, query, obj):
    try:
        timeout = min(float(query.get("timeout", ["10"])[0]), 600.0)
    except ValueError:
        raise HttpError(400, "timeout must be a number")
    want = {k: qint(query, k, 0) for k in WAIT_COUNTS if k in query}
    deadline = time.monotonic() + timeout
    with sim.cond:
        while True:
            now = sim.counts_locked()
            if all(now[k] >= v for k, v in want.items()):
                return api_reply(200, {"ok": True, **now})
            left = deadline - time.monotonic()
            if left <= 0 or sim.stopping.is_set():
                return api_reply(200, {"ok": False, **now})
            sim.cond.wait(min(left, 0.5))


def c_patches(h, sim, query, obj):
    with sim.lock:
        return api_reply(200, [dict(p) for p in sim.patches])


def c_config_get(h, sim, query, obj):
    with sim.lock:
        return api_reply(200, dict(sim.config))


def c_config_post(h, sim, query, obj):
    return api_reply(200, sim.configure(obj))


def c_ratelimit(h, sim, query, obj):
    return api_reply(200, sim.rate.report())


def c_shutdown(h, sim, query, obj):
    threading.Thread(target=lambda: (time.sleep(0.05), os.kill(os.getpid(), signal.SIGTERM)),
                     daemon=True).start()
    return api_reply(200, {"ok": True})


CONTROL = {
    ("GET", "state"): c_state, ("GET", "logs"): c_logs, ("GET", "heartbeats"): c_heartbeats,
    ("GET", "files"): c_files, ("GET", "files/data"): c_file_data,
    ("GET", "outputs"): c_outputs, ("GET", "json_values"): c_json_values,
    ("GET", "objects"): c_objects_get, ("POST", "objects"): c_objects_post,
    ("GET", "requests"): c_requests, ("GET", "violations"): c_violations,
    ("POST", "reset"): c_reset, ("GET", "faults"): c_faults_get, ("POST", "faults"): c_faults_post,
    ("POST", "run"): c_run, ("POST", "refuse"): c_refuse, ("GET", "wait"): c_wait,
    ("GET", "config"): c_config_get, ("POST", "config"): c_config_post,
    ("GET", "ratelimit"): c_ratelimit, ("GET", "patches"): c_patches, ("POST", "shutdown"): c_shutdown,
}


# ------------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="API port (0: pick a free one)")
    ap.add_argument("--storage-port", type=int, default=0, help="storage port (0: pick)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--api-key", default="sim-key")
    ap.add_argument("--job-id", type=int, default=None, help="only this job id exists (default: any)")
    ap.add_argument("--run-id", type=int, default=None, help="only this run id exists (default: any)")
    ap.add_argument("--ready-file", default=None)
    ap.add_argument("--data-dir", default=None, help="storage directory (default: a new temp dir)")
    ap.add_argument("--max-lifetime", type=float, default=3600.0,
                    help="exit after this many seconds, whatever happens")
    ap.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--rate-limit", type=int, default=0, metavar="N",
                    help="at most N API requests per window per API key, then 429 (0: no limit)")
    ap.add_argument("--rate-window", type=float, default=300.0, metavar="S",
                    help="the rate limit's window in seconds (default 300, Civis's 5 minutes)")
    ap.add_argument("--delay-ms", type=float, default=0.0, metavar="MS",
                    help="wait this long before every API answer")
    ap.add_argument("--storage-delay-ms", type=float, default=0.0, metavar="MS",
                    help="wait this long before every storage answer")
    ap.add_argument("--etag", choices=ETAG_KINDS, default="sha256",
                    help="sha256 (default): the ETag is the first 32 hex digits of the SHA-256, "
                         "one hash pass per upload; md5: S3's own (MD5), a second pass; "
                         "opaque: a unique token, no hash while the bytes arrive (the SHA-256 "
                         "of a file is taken from its stored bytes when first asked)")
    ap.add_argument("--heartbeats-missing", type=int, choices=MISSING_STATUSES, default=None,
                    metavar="STATUS", help="answer POST .../heartbeats with 404, 405 or 410")
    ap.add_argument("--run-patch-missing", type=int, choices=MISSING_STATUSES, default=None,
                    metavar="STATUS", help="answer PATCH .../runs/{run_id} with 404, 405 or 410")
    a = ap.parse_args(argv)
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("the simulator binds a loopback address only")
    try:
        config = check_config({"rateLimit": a.rate_limit, "rateWindow": a.rate_window,
                               "delayMs": a.delay_ms, "storageDelayMs": a.storage_delay_ms,
                               "heartbeatStatus": a.heartbeats_missing,
                               "runPatchStatus": a.run_patch_missing, "etag": a.etag})
    except HttpError as e:
        ap.error(e.description)

    own_dir = a.data_dir is None
    data_dir = tempfile.mkdtemp(prefix="civis-sim-") if own_dir else a.data_dir
    os.makedirs(data_dir, exist_ok=True)
    sim = Sim(a.api_key, a.job_id, a.run_id, data_dir, a.verbose, config)
    done = threading.Event()

    def stop(*_):
        done.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        for side, port in (("api", a.port), ("storage", a.storage_port)):
            lst = Listener(sim, side, a.host, port)
            lst.start()
            sim.listeners[side] = lst
        if a.ready_file:
            tmp = a.ready_file + ".tmp"
            with open(tmp, "w") as fh:
                json.dump({"api": sim.listeners["api"].port,
                           "storage": sim.listeners["storage"].port, "pid": os.getpid()}, fh)
            os.replace(tmp, a.ready_file)
        sys.stderr.write("civis-sim: api on %d, storage on %d, data in %s\n"
                         % (sim.listeners["api"].port, sim.listeners["storage"].port, data_dir))
        deadline = time.monotonic() + a.max_lifetime
        while not done.is_set():
            if time.monotonic() > deadline:
                sys.stderr.write("civis-sim: max lifetime reached, exiting\n")
                break
            if a.parent_pid and os.getppid() != a.parent_pid:
                sys.stderr.write("civis-sim: parent %d gone, exiting\n" % a.parent_pid)
                break
            done.wait(0.5)
    finally:
        sim.stopping.set()
        with sim.cond:
            sim.cond.notify_all()
        for lst in sim.listeners.values():
            with lst.lock:
                if lst.timer is not None:
                    lst.timer.cancel()
            try:
                lst.stop()
            except OSError:
                pass
            lst.drop_connections()
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            for d in ("tmp", "files", "spare"):
                shutil.rmtree(os.path.join(data_dir, d), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
