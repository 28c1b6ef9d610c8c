#!/usr/bin/env python3
"""storage_speed.py: is the simulator's storage side the ceiling of an upload figure?

Times curl sending the same bytes (a form POST with `curl -F`, and a part PUT
with `curl -T`) into the simulator's storage port and into a trivial sink that
reads and drops the body (this script with --sink: recv_into a 4 MiB buffer,
no parsing). Also checks that the simulator stored every upload byte-exact
(its SHA-256 against the file's).

    python3 tests/sim/storage_speed.py [--sizes 300M,1G] [--runs 3] [--dir /tmp]

Prints one line per (size, kind, target) with the median wall time of curl and
the throughput, then the ratio simulator/sink and the simulator's CPU seconds
(user + system) per GiB, steadier than wall times on a loaded machine. Uses
`curl` from PATH."""

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SimHarness, _spawn, _kill_group, free_port  # noqa: E402

MiB = 1 << 20


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip().upper()
    if s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


# ------------------------------------------------------------------ the sink

def sink_conn(c):
    buf = bytearray(4 * MiB)
    mv = memoryview(buf)
    pending = b""
    try:
        while True:
            while b"\r\n\r\n" not in pending:
                d = c.recv(65536)
                if not d:
                    return
                pending += d
            head, _, rest = pending.partition(b"\r\n\r\n")
            length = 0
            expect = False
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
                elif k.strip().lower() == b"expect" and v.strip().lower() == b"100-continue":
                    expect = True
            if expect:
                c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            left = length - len(rest)
            pending = rest[length:] if left < 0 else b""
            while left > 0:
                n = c.recv_into(mv, min(left, len(buf)))
                if not n:
                    return
                left -= n
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    finally:
        c.close()


def run_sink(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    sys.stdout.write("listening\n")
    sys.stdout.flush()
    while True:
        c, _ = s.accept()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
        threading.Thread(target=sink_conn, args=(c,), daemon=True).start()


# ------------------------------------------------------------------ the measurement

def curl(argv):
    t0 = time.monotonic()
    p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}"] + argv,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    wall = time.monotonic() - t0
    code = p.stdout.decode().strip()
    if p.returncode != 0 or not code.startswith("2"):
        raise RuntimeError("curl %s: rc %d, HTTP %s: %s" % (argv[-1], p.returncode, code,
                                                           p.stderr.decode()[:300]))
    return wall


def cpu_seconds(pid):
    """user + system CPU seconds of process pid so far (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def form_args(fp, path):
    args = []
    for k, v in fp["uploadFields"].items():
        args += ["--form-string", "%s=%s" % (k, v)]
    return args + ["-F", "file=@%s" % path, fp["uploadUrl"]]


def measure(h, sink_url, path, size, sha, runs):
    rows = []
    for kind in ("form", "put"):
        times = {"sim": [], "sink": []}
        cpu = []
        for _ in range(runs):
            for target in ("sim", "sink"):
                if target == "sink":
                    argv = (["-F", "file=@%s" % path] if kind == "form" else ["-T", path]) + [sink_url]
                    times[target].append(curl(argv))
                    continue
                c0 = cpu_seconds(h.sim_proc.pid)
                if kind == "form":
                    _, _, data = h.api("POST", "files/", {"name": "speed.bin"})
                    fp = json.loads(data)
                    times[target].append(curl(form_args(fp, path)))
                    fid = fp["id"]
                else:
                    _, _, data = h.api("POST", "files/multipart", {"name": "speed.bin", "numParts": 1})
                    mp = json.loads(data)
                    times[target].append(curl(["-T", path, mp["uploadUrls"][0]]))
                    st, _, _ = h.api("POST", "files/multipart/%d/complete" % mp["id"])
                    if st != 204:
                        raise RuntimeError("complete: %d" % st)
                    fid = mp["id"]
                cpu.append(cpu_seconds(h.sim_proc.pid) - c0)   # the upload (and complete)
                rec = [f for f in h.files() if f["id"] == fid][0]
                if rec["sha256"] != sha or rec["size"] != size:
                    raise RuntimeError("the simulator stored %s bytes, SHA-256 %s; sent %d, %s"
                                       % (rec["size"], rec["sha256"], size, sha))
                h.reset()       # drop the stored bytes
        med = {t: statistics.median(v) for t, v in times.items()}
        for t in ("sim", "sink"):
            rows.append("%8s %-4s into %-4s %6.2f s  %7.0f MB/s   (runs: %s)" % (
                fmt_size(size), kind, t, med[t], size / med[t] / 1e6,
                " ".join("%.2f" % x for x in times[t])))
        rows.append("%8s %-4s sim/sink %.2f; simulator CPU %.2f s per GiB (runs: %s)" % (
            fmt_size(size), kind, med["sim"] / med["sink"], statistics.median(cpu) * (1 << 30) / size,
            " ".join("%.2f" % c for c in cpu)))
        sys.stdout.write("\n".join(rows[-3:]) + "\n")
        sys.stdout.flush()
    return rows


def fmt_size(n):
    for unit, m in (("GiB", 1 << 30), ("MiB", 1 << 20), ("GB", 10 ** 9), ("MB", 10 ** 6)):
        if n % m == 0:
            return "%d %s" % (n // m, unit)
    return "%d B" % n


def make_file(d, size):
    path = os.path.join(d, "speed-%d.bin" % size)
    sha = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        block = os.urandom(4 * MiB)
        i = 0
        while left > 0:
            # distinct blocks, cheaply: a counter prefix on the random block
            b = (i.to_bytes(8, "little") + block[8:])[:left]
            fh.write(b)
            sha.update(b)
            left -= len(b)
            i += 1
    return path, sha.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="300000000,1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the test files go (default: a temp dir)")
    ap.add_argument("--sim-args", default="", help="more simulator options, e.g. '--etag md5'")
    ap.add_argument("--sink", type=int, default=None, metavar="PORT", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.sink is not None:
        run_sink(a.sink)
        return 0
    d = tempfile.mkdtemp(prefix="storage-speed-", dir=a.dir)
    port = free_port()
    sink = _spawn([sys.executable, os.path.abspath(__file__), "--sink", str(port)],
                  stdout=subprocess.PIPE)
    try:
        if sink.stdout.readline().strip() != b"listening":
            raise RuntimeError("the sink did not start")
        with SimHarness(use_prism=False, max_lifetime=3600, sim_args=a.sim_args.split()) as h:
            for s in a.sizes.split(","):
                size = parse_size(s)
                path, sha = make_file(d, size)
                measure(h, "http://127.0.0.1:%d/sink" % port, path, size, sha, a.runs)
                os.unlink(path)
    finally:
        _kill_group(sink, grace=0.5)
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
