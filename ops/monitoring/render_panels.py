#!/usr/bin/env python3
"""Renders the dashboard's main panels from a real run, without Grafana:
starts kvtier-server with /metrics, drives it with kvtier-bench (puts, gets
and lookups) and kvtierctl demo, scrapes /metrics every second, computes
the panels' quantities from the scrapes (rates of counters between
scrapes, histogram quantiles, ratios) and plots them into one PNG. Prints
every metric family with one sample line.

  .venv/bin/python ops/monitoring/render_panels.py --build_dir build --out panels.png
"""
import argparse
import math
import os
import re
import subprocess
import time
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from metrics_node import MetricsNode  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels)): value} of one scrape."""
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if not m or line.startswith("#"):
            continue
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def series(scrapes, name, by):
    """Per value of label `by` (None: summed), [(t, value)]."""
    out = defaultdict(list)
    for t, sample in scrapes:
        sums = defaultdict(float)
        for (n, labels), v in sample.items():
            if n != name:
                continue
            key = dict(labels).get(by) if by else name
            sums[key] += v
        for k, v in sums.items():
            out[k].append((t, v))
    return out


def rate(points):
    return [((t0 + t1) / 2, (v1 - v0) / (t1 - t0))
            for (t0, v0), (t1, v1) in zip(points, points[1:]) if t1 > t0]


def quantile(scrapes, name, q, method):
    """histogram_quantile(q, rate(name_bucket{method}[1 scrape])) per scrape pair."""
    pts = []
    for (t0, s0), (t1, s1) in zip(scrapes, scrapes[1:]):
        buckets = []
        for (n, labels), v in s1.items():
            d = dict(labels)
            if n != name + "_bucket" or d.get("method") != method:
                continue
            le = math.inf if d["le"] == "+Inf" else float(d["le"])
            buckets.append((le, v - s0.get((n, labels), 0.0)))
        buckets.sort()
        if not buckets or buckets[-1][1] <= 0:
            continue
        target, prev_le, prev_c = q * buckets[-1][1], 0.0, 0.0
        for le, c in buckets:
            if c >= target:
                if math.isinf(le):
                    pts.append(((t0 + t1) / 2, prev_le))
                else:
                    frac = (target - prev_c) / (c - prev_c) if c > prev_c else 1.0
                    pts.append(((t0 + t1) / 2, prev_le + (le - prev_le) * frac))
                break
            prev_le, prev_c = le, c
    return pts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build_dir", default="build")
    ap.add_argument("--out", default="panels.png")
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    bindir = os.path.join(os.path.abspath(args.build_dir), "bin")
    with MetricsNode(os.path.join(bindir, "kvtier-server"), ram_bytes=256 << 20,
                     extra=["--disk_bytes=1073741824"]) as node:
        bench = subprocess.Popen(
            [os.path.join(bindir, "kvtier-bench"), f"--target={node.target}", "--noucx",
             "--nolocal_lanes", "--page_sizes=65536,262144", "--clients=1,4",
             "--duration_ms=2500",
             "--ops_kinds=put,get,lookup", "--batch_pages=8"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        scrapes, start = [], time.time()
        while time.time() - start < args.seconds:
            if int(time.time() - start) % 5 == 0:
                subprocess.run([os.path.join(bindir, "kvtierctl"), f"--target={node.target}",
                                "demo", "--prompt_tokens=512", "--layers=2",
                                f"--seed={int(time.time())}"], capture_output=True)
            body = node.scrape()
            scrapes.append((time.time() - start, parse(body)))
            time.sleep(1)
        bench.wait(timeout=120)
        families = {}
        for line in body.splitlines():
            m = SAMPLE.match(line)
            if m and not line.startswith("#"):
                base = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
                families.setdefault(base, line)

    fig, axes = plt.subplots(3, 2, figsize=(13, 11))
    ax = axes[0][0]
    hits = series(scrapes, "kvtier_tier_hits_total", "tier")
    misses = series(scrapes, "kvtier_get_misses_total", None)["kvtier_get_misses_total"]
    total = defaultdict(float)
    for tier, pts in hits.items():
        for t, r in rate(pts):
            total[t] += r
    for t, r in rate(misses):
        total[t] += r
    for tier, pts in hits.items():
        ax.plot(*zip(*[(t, r / total[t] if total[t] else 0) for t, r in rate(pts)]), label=tier)
    ax.set_title("Hit rate by tier")
    ax.legend()
    ax = axes[0][1]
    for kind in ("put", "get"):
        for path, pts in series(scrapes, f"kvtier_{kind}_bytes_total", "path").items():
            r = rate(pts)
            if any(v > 0 for _, v in r):
                ax.plot(*zip(*[(t, v / 1e9) for t, v in r]), label=f"{kind} {path}")
    ax.set_title("Throughput by data path (GB/s)")
    ax.legend()
    ax = axes[1][0]
    for method in ("BatchPut", "BatchGet", "Lookup"):
        for q in (0.5, 0.99):
            pts = quantile(scrapes, "kvtier_rpc_duration_seconds", q, method)
            if pts:
                ax.plot(*zip(*[(t, v * 1e3) for t, v in pts]), label=f"p{int(q * 100)} {method}")
    ax.set_title("RPC latency (ms)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax = axes[1][1]
    for tier in ("ram", "disk"):
        used = series(scrapes, "kvtier_tier_used_bytes", "tier").get(tier, [])
        cap = dict(series(scrapes, "kvtier_tier_capacity_bytes", "tier").get(tier, []))
        ax.plot(*zip(*[(t, v / cap[t]) for t, v in used if cap.get(t)]), label=tier)
    ax.set_title("Capacity used")
    ax.legend()
    ax = axes[2][0]
    chain = rate(series(scrapes, "kvtier_lookup_chain_pages_total", None)[
        "kvtier_lookup_chain_pages_total"])
    prefix = dict(rate(series(scrapes, "kvtier_lookup_prefix_pages_total", None)[
        "kvtier_lookup_prefix_pages_total"]))
    ax.plot(*zip(*[(t, prefix[t] / c if c else 0) for t, c in chain]))
    ax.set_title("Lookup prefix hit ratio")
    ax = axes[2][1]
    for name in ("kvtier_demotions_total", "kvtier_promotions_total",
                 "kvtier_dropped_pages_total"):
        pts = rate(series(scrapes, name, None)[name])
        ax.plot(*zip(*pts), label=name.replace("kvtier_", "").replace("_total", ""))
    errs = defaultdict(list)
    for (t0, s0), (t1, s1) in zip(scrapes, scrapes[1:]):
        for (n, labels), v in s1.items():
            d = dict(labels)
            if n == "kvtier_rpcs_total" and d.get("code") != "OK":
                errs[f'{d["method"]} {d["code"]}'].append(((t0 + t1) / 2, (v - s0.get((n, labels), 0)) / (t1 - t0)))
    for k, pts in errs.items():
        ax.plot(*zip(*pts), linestyle="--", label=f"errors {k}")
    ax.set_title("Tier movement and errors (per second)")
    ax.legend(fontsize=7)
    for row in axes:
        for a in row:
            a.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out} from {len(scrapes)} scrapes")
    for base in sorted(families):
        print(families[base])


if __name__ == "__main__":
    main()
