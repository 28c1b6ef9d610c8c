#!/usr/bin/env python3
"""A Python job for Civis Platform, standard library only.

It logs with `logging` (INFO and below to stdout, WARNING and above to stderr,
so the run log shows them at levels info and error), writes summary.csv and a
directory of reports (HTML, SVG, text) into the output directory. civis-agent
uploads summary.csv as it is and reports/ as one archive, reports.tar.gz
(--archive reports, or CIVIS_AGENT_ARCHIVE=reports as in the Dockerfile).

Run it with PYTHONUNBUFFERED=1 (the Dockerfile sets it): logging flushes each
record, but print() does not, and Python buffers stdout in 8 KiB blocks when
it is a pipe, as under the agent: a job that only print()s would reach the
log at exit, all at once, after its stderr."""
import csv
import html
import logging
import os
import random
import statistics
import sys
import time

REGIONS = ("north", "south", "west")
DAYS = 30
TARGET = 95

log = logging.getLogger("signups")


def setup_logging():
    fmt = logging.Formatter("%(name)s: %(message)s")
    out = logging.StreamHandler(sys.stdout)
    out.setLevel(logging.DEBUG)
    out.addFilter(lambda r: r.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for h in (out, err):
        h.setFormatter(fmt)
        logging.root.addHandler(h)
    logging.root.setLevel(logging.INFO)


def simulate(rng):
    """Daily sign-ups per region: a trend plus noise, reproducible (seeded)."""
    data = {}
    for i, region in enumerate(REGIONS):
        base = 90 + 10 * i
        data[region] = [max(0, round(base + 0.8 * d + rng.gauss(0, 8))) for d in range(DAYS)]
    return data


def summarize(data):
    rows = []
    for region, series in data.items():
        rows.append({"region": region, "days": len(series), "total": sum(series),
                     "mean": round(statistics.mean(series), 2),
                     "stdev": round(statistics.stdev(series), 2),
                     "max": max(series), "below_target": sum(1 for v in series if v < TARGET)})
    return rows


def svg_chart(data, width=640, height=240, pad=30):
    top = max(max(s) for s in data.values())
    colors = {"north": "#1f77b4", "south": "#ff7f0e", "west": "#2ca02c"}
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">' % (width, height),
             '<rect width="100%" height="100%" fill="white"/>']
    for region, series in data.items():
        pts = " ".join("%.1f,%.1f" % (pad + d * (width - 2 * pad) / (DAYS - 1),
                                      height - pad - v * (height - 2 * pad) / top)
                       for d, v in enumerate(series))
        parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                     % (colors[region], pts))
        parts.append('<text x="%d" y="%d" fill="%s">%s</text>'
                     % (width - pad - 40, pad + 14 * REGIONS.index(region), colors[region], region))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_outputs(outdir, data, rows):
    with open(os.path.join(outdir, "summary.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    rep = os.path.join(outdir, "reports")
    os.makedirs(rep, exist_ok=True)
    svg = svg_chart(data)
    with open(os.path.join(rep, "signups.svg"), "w") as fh:
        fh.write(svg)
    table = "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % html.escape(str(v)) for v in r.values())
                    for r in rows)
    head = "".join("<th>%s</th>" % html.escape(k) for k in rows[0])
    with open(os.path.join(rep, "report.html"), "w") as fh:
        fh.write("<!doctype html><meta charset=utf-8><title>Sign-ups</title>\n"
                 "<h1>Daily sign-ups, %d days</h1>\n<table><tr>%s</tr>%s</table>\n%s"
                 % (DAYS, head, table, svg))
    with open(os.path.join(rep, "summary.txt"), "w") as fh:
        for r in rows:
            fh.write("%-6s total %5d  mean %6.2f  below target on %d days\n"
                     % (r["region"], r["total"], r["mean"], r["below_target"]))


def main():
    setup_logging()
    outdir = os.environ.get("CIVIS_AGENT_OUTPUT_DIR", "/output")
    pace = float(os.environ.get("EXAMPLE_PACE", "0"))  # seconds per region, for demos
    os.makedirs(outdir, exist_ok=True)
    log.info("simulating %d days for %d regions", DAYS, len(REGIONS))
    data = simulate(random.Random(42))
    rows = summarize(data)
    for i, r in enumerate(rows, 1):
        time.sleep(pace)
        print("progress: %s done (%d/%d)" % (r["region"], i, len(rows)))
        log.info("%s: total %d, mean %.2f, max %d", r["region"], r["total"], r["mean"], r["max"])
        if r["below_target"]:
            log.warning("%s was below the target of %d on %d days",
                        r["region"], TARGET, r["below_target"])
    write_outputs(outdir, data, rows)
    log.info("wrote summary.csv and reports/ (%d files) to %s",
             len(os.listdir(os.path.join(outdir, "reports"))), outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
