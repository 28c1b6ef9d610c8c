"""bench_upload.py: the upload and PID-1 figures of `make bench` (issue 14),
imported by bench.py (BENCH=upload, small, pid1).

    upload  civis-agent upload (the whole process) of 300 MB and 1 GiB against
            one `curl -F` form POST of the same bytes and against parallel part
            PUTs in civis-python's scheme (square-root part size, 4 at once:
            `curl --parallel --parallel-max 4` over the presigned part URLs,
            POST /files/multipart and .../complete included); the agent's peak
            RSS; every stored file checked by SHA-256 at the simulator
    small   1,000 files of 10 KiB left in --output-dir: from the command's exit
            to the last registration, with 50 ms on every API and storage
            answer and with none; requests per file; log requests
    pid1    tini and dumb-init (Debian packages) side by side with the agent
            (tee only, no CIVIS_* variables): start-up added to `true`
            (median of many runs), peak RSS, 1 GiB through stdout
"""

import json
import math
import os
import shutil
import subprocess
import time

B = None   # bench.py (the harness: say, row, med, fail, size, ...) sets it

MiB = 1 << 20


def part_size(n):
    """civis-python's and the agent's: max(sqrt(5 MiB * n), 5 MiB), <= 10,000 parts."""
    ps = max(int(math.ceil(math.sqrt(5 * MiB * n))), 5 * MiB)
    return max(ps, -(-n // 10000))


def sized_file(nbytes):
    big = B.big_file()
    path = os.path.join(B.BDIR, "up-%d.bin" % nbytes)
    if not os.path.exists(path) or os.path.getsize(path) != nbytes:
        subprocess.run("head -c %d '%s' > '%s'" % (nbytes, big, path), shell=True, check=True)
    return path


def curl_parallel(h, path):
    """POST /files/multipart, the parts with curl --parallel-max 4, complete."""
    n = os.path.getsize(path)
    ps = part_size(n)
    nparts = -(-n // ps)
    pdir = path + ".parts"
    if not os.path.isdir(pdir) or len(os.listdir(pdir)) != nparts:
        shutil.rmtree(pdir, ignore_errors=True)
        os.makedirs(pdir)
        subprocess.run(["split", "-b", str(ps), "-d", "-a", "5", path, os.path.join(pdir, "p")],
                       check=True)
    parts = sorted(os.listdir(pdir))
    for p in parts:
        B.warm(os.path.join(pdir, p))
    t0 = time.monotonic()
    st, _, body = h.api("POST", "/files/multipart", {"name": os.path.basename(path),
                                                      "numParts": nparts})
    if st != 201:
        B.fail("upload: POST /files/multipart gave %d" % st)
        return float("nan"), nparts
    fp = json.loads(body)
    argv = ["curl", "-s", "--no-progress-meter", "--parallel", "--parallel-max", "4",
            "-w", "%{http_code}\n"]
    for p, url in zip(parts, fp["uploadUrls"]):
        argv += ["-o", "/dev/null", "-T", os.path.join(pdir, p), url]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    codes = r.stdout.split()
    st, _, _ = h.api("POST", "/files/multipart/%d/complete" % fp["id"])
    wall = time.monotonic() - t0
    if len(codes) != nparts or any(c != "200" for c in codes) or st not in (200, 204):
        B.fail("upload: curl --parallel: %s, complete %d" % (codes[:8], st))
    return wall, nparts


def bench_upload(h):
    sizes = [300 * 1000 * 1000, B.size("big_bytes")] if not B.QUICK else [64 * MiB]
    for n in sizes:
        path = sized_file(n)
        B.warm(path)
        B.sha256_of(path)
        say_n = "%.0f MB" % (n / 1e6) if n < B.GiB else "%.3g GiB" % (n / B.GiB)
        B.say("== 7. upload %s: civis-agent upload (whole process) against curl -F and "
              "curl --parallel-max 4 part PUTs" % say_n)
        a_w, f_w, p_w, hwm = [], [], [], []
        rounds = 5
        # Warm-up, not timed: the simulator keeps the files a reset gives
        # back and overwrites them (SparePool); an upload into new files
        # pays 0.6-3.2 s of system time per GiB more, so without this the
        # first of a round (the agent) measured the file system. One of each,
        # with no reset between, leaves a spare of every shape (parts twice,
        # one whole file) for the measured rounds.
        h.reset()
        curl_parallel(h, path)
        B.curl_upload(h, path)
        B.agent_upload(h, path)
        for i in range(rounds):
            h.reset()
            w, k = B.agent_upload(h, path)
            B.check_upload(h, path, "upload %s (agent)" % say_n)
            nparts = (h.files() or [{}])[-1].get("numParts")
            a_w.append(w)
            hwm.append(k)
            h.reset()
            f_w.append(B.curl_upload(h, path))
            B.check_upload(h, path, "upload %s (curl -F)" % say_n)
            h.reset()
            pw, pn = curl_parallel(h, path)
            B.check_upload(h, path, "upload %s (curl --parallel)" % say_n)
            p_w.append(pw)
            B.say("  round %d: agent %.2f s (%.0f MB/s, %s parts, VmHWM %d kB); curl -F %.2f s "
                  "(%.0f MB/s); curl --parallel-max 4, %d parts: %.2f s (%.0f MB/s)"
                  % (i + 1, w, n / w / 1e6, nparts, k, f_w[-1], n / f_w[-1] / 1e6, pn, pw,
                     n / pw / 1e6))
        rp = B.med(a_w) / B.med(p_w)
        rf = B.med(a_w) / B.med(f_w)
        B.row("7 upload %s agent/curl --parallel" % say_n, "%.3f" % rp, "<= 0.8", rp <= 0.8)
        B.row("7 upload %s agent/curl -F" % say_n, "%.3f" % rf, "<= 1.0", rf <= 1.0)
        B.row("7 upload %s agent peak RSS" % say_n, "%.1f MiB" % B.mib(max(hwm)), "<= 24 MiB",
              B.mib(max(hwm)) <= 24)
        key = "upload_%dMB" % round(n / 1e6)
        B.num(key + "_agent_s", B.med(a_w))
        B.num(key + "_curl_f_s", B.med(f_w))
        B.num(key + "_curl_parallel_s", B.med(p_w))
        B.num(key + "_ratio_curl_f", rf)
        B.num(key + "_ratio_curl_parallel", rp)
        B.num(key + "_hwm_kb", max(hwm))


def small_files_once(h, src, delay_ms, args=()):
    work = os.path.join(B.BDIR, "small-out")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work)
    h.reset()
    h.set_config(delayMs=delay_ms, storageDelayMs=delay_ms)
    tf = os.path.join(B.BDIR, "small.exit")
    rc, wall, err = B.run([B.AGENT, "--output-dir", work] + list(args) + ["--", "sh", "-c",
                           "date +%%s.%%N > '%s'" % tf], env=h.env(), timeout=900)
    nf = len(os.listdir(src))
    if rc != 0:
        B.fail("small files: agent exit %d: %s" % (rc, err[-800:]))
    with open(tf) as fh:
        t_exit = float(fh.read())
    reqs = h.requests()
    regs = [q for q in reqs if q.get("server") == "api" and q["path"].endswith("/outputs")]
    files = [q for q in reqs if q.get("server") == "api" and "/files" in q["path"]]
    logs = [q for q in reqs if q.get("server") == "api" and q["path"].endswith("/logs")]
    sto = [q for q in reqs if q.get("server") == "storage"]
    outs = h.outputs()
    complete = [f for f in h.files() if f.get("fileSize") == 10240]
    if len(complete) != nf or len({o.get("objectId") for o in outs}) != nf:
        B.fail("small files (%d ms): %d of %d stored, %d outputs registered"
               % (delay_ms, len(complete), nf, len(outs)))
    last = max((q["time"] + (q.get("duration") or 0) for q in regs), default=float("nan"))
    h.set_config(delayMs=0, storageDelayMs=0)
    shutil.rmtree(work, ignore_errors=True)
    return last - t_exit, (len(files) + len(regs)) / nf, len(sto) / nf, len(logs), wall


def bench_small(h):
    nf = B.size("small_files")
    src = os.path.join(B.BDIR, "small%d" % nf)
    if not os.path.isdir(src) or len(os.listdir(src)) != nf:
        shutil.rmtree(src, ignore_errors=True)
        os.makedirs(src)
        for i in range(nf):
            with open(os.path.join(src, "f%04d.bin" % i), "wb") as fh:
                fh.write(os.urandom(10240))
    # The simulator has no rate limit: the agent's own budget (issue 13:
    # 20% of 1,000 per 5 min while the command runs, 80% after) would hold
    # 2,000 requests for minutes where no limit binds. So the latency
    # figure runs with --api-budget off, and the budget's effect is
    # measured on its own, on a window scaled 1/10 (1,000 per 30 s).
    cases = [(50, ["--api-budget", "off"], "budget off"),
             (0, ["--api-budget", "off"], "budget off"),
             (50, ["--api-budget", "20:1000/30s"], "default budget, window 30 s")]
    if B.QUICK:
        cases = cases[:2]
    for delay, args, what in cases:
        B.say("== 7b. %d files of 10 KiB in --output-dir, %d ms on every API and storage "
              "answer, %s" % (nf, delay, what))
        res = [small_files_once(h, src, delay, args) for _ in range(2 if "off" in args else 1)]
        for r in res:
            B.say("  exit to last registration %.2f s; %.2f API requests/file (POST files/ + "
                  "registration), %.2f storage/file; %d log requests; agent wall %.2f s"
                  % r)
        t = B.med([r[0] for r in res])
        target = "<= 10 s" if delay == 50 and "off" in args else "-"
        B.row("7b %d x 10 KiB, %d ms, %s, exit->last reg." % (nf, delay, what), "%.2f s" % t,
              target, t <= 10.0 if target != "-" else None)
        B.row("7b %d x 10 KiB, %d ms, %s, API req/file" % (nf, delay, what),
              "%.2f" % B.med([r[1] for r in res]), "2 (floor)")
        B.row("7b %d x 10 KiB, %d ms, %s, log requests" % (nf, delay, what),
              "%d" % max(r[3] for r in res), "share requests")
        key = "small_%dms_%s" % (delay, "off" if "off" in args else "budget30s")
        B.num(key + "_exit_to_last_reg_s", t)


def spawn_rss(argv, env):
    """Peak RSS (kB) of the wrapper itself: VmHWM of its process (a fresh
    address space after exec; rusage would count Python's) while its command
    sleeps."""
    p = subprocess.Popen(argv + ["sleep", "0.4"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(0.25)
    hwm = 0
    try:
        with open("/proc/%d/status" % p.pid) as fh:
            for ln in fh:
                if ln.startswith("VmHWM:"):
                    hwm = int(ln.split()[1])
    except OSError:
        pass
    p.wait()
    return hwm


def bench_pid1(h):
    del h      # no simulator: these run without the API
    tools = {"agent": [B.AGENT, "--"]}
    for name, argv in (("tini", ["tini", "-s", "--"]), ("dumb-init", ["dumb-init"])):
        if shutil.which(argv[0]):
            tools[name] = [shutil.which(argv[0])] + argv[1:]
        else:
            B.say("  %s not installed (apt-get install %s): left out" % (name, name))
    env = B.plain_env()
    true = shutil.which("true")
    n = B.size("startup_runs")
    rounds = 5
    per = max(1, n // rounds)
    B.say("== 10. PID-1 tools: start-up added to true (%d runs each, alternating), peak RSS, "
          "1 GiB through stdout" % (per * rounds))
    res = {k: [] for k in ["true"] + list(tools)}
    for _ in range(rounds):
        for name, argv in [("true", [])] + list(tools.items()):
            out = subprocess.run([B.SPAWNTIME, str(per)] + argv + [true], env=env, check=True,
                                 stdout=subprocess.PIPE, text=True).stdout.split()
            res[name].append(float(out[0]))
    t = B.med(res["true"])
    added = {k: (B.med(v) - t) / 1000.0 for k, v in res.items() if k != "true"}
    rss = {k: max(spawn_rss(argv, env) for _ in range(5)) for k, argv in tools.items()}
    gib = B.size("big_bytes")
    thr = {k: [] for k in tools}
    for _ in range(3):
        for k, argv in tools.items():
            cmd = "%s head -c %d /dev/zero | cat > /dev/null" % (
                " ".join("'%s'" % a for a in argv), gib)
            t0 = time.monotonic()
            subprocess.run(["sh", "-c", cmd], env=env, check=True)
            thr[k].append(time.monotonic() - t0)
    for k in tools:
        B.say("  %-9s start-up added %.2f ms (round medians %s us), peak RSS %d kB, %.3g GiB "
              "through stdout %.2f s (median of 3)" % (k, added[k], [round(x) for x in res[k]],
                                                       rss[k], gib / B.GiB, B.med(thr[k])))
    if "tini" in tools:
        d = added["agent"] - added["tini"]
        B.row("10 start-up added: agent - tini", "%.2f ms" % d, "<= 1 ms", d <= 1.0)
        r = rss["agent"] / rss["tini"]
        B.row("10 peak RSS agent/tini", "%.2f (%d / %d kB)" % (r, rss["agent"], rss["tini"]),
              "<= 2", r <= 2)
        r = B.med(thr["agent"]) / B.med(thr["tini"])
        B.row("10 1 GiB stdout agent/tini", "%.3f" % r, "<= 1.0 (noise)", r <= 1.05)
    if "dumb-init" in tools:
        B.row("10 start-up added: dumb-init", "%.2f ms" % added["dumb-init"])
        B.row("10 peak RSS dumb-init", "%d kB" % rss["dumb-init"])
