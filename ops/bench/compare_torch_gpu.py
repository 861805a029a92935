#!/usr/bin/env python3
"""kvtier's CUDA decode attention beside PyTorch and the copy engines, in one
device session.

Runs, on the same GPU:
  * torch's scaled_dot_product_attention (GQA) for one decode query over
    contiguous K/V, on the Llama-3-8B layer shape of kernels_cuda_bench
    (32 query heads, 8 KV heads, head_dim 128, fp16), per batch and context;
  * a device-to-device copy (reported as read + write bytes per second) and
    pinned host-to-device copies of 1, 16 and 256 MiB;
  * build/kernels/kernels_cuda_bench (BM_CudaDecodeAttention,
    BM_CudaEstimateTopK) as a subprocess, parsed from its JSON;
and prints each kvtier figure as a ratio of its reference:
  * dense paged decode (every page, pages of 16) GB/s over torch's GB/s at
    equal KV bytes (targets: >= 0.9 at batch 16, >= 0.7 at batch 1 from 32K);
  * the budgeted step at 1/8 (pages of 32, fp16 digests: estimate + top-k
    + attention) against torch over the whole context: the speed-up (target
    >= 4 at batch 16 from 32K);
  * estimate + top-k digest bytes per second over the device-to-device copy
    (pages of 32, fp16 digests; target >= 0.6).

Needs only Python, PyTorch with CUDA and the kvtier binary:
    python3 ops/bench/compare_torch_gpu.py --bench build/kernels/kernels_cuda_bench \\
        [--contexts 8192,32768,131072] [--batches 1,16] [--json out.json]
"""

import argparse
import json
import re
import subprocess
import sys

Q_HEADS, KV_HEADS, HEAD_DIM, ELEM_BYTES = 32, 8, 128, 2
NAME = re.compile(r"BM_CudaDecodeAttention/context:(\d+)/div:(\d+)/batch:(\d+)/page:(\d+)")
ESTIMATE = re.compile(r"BM_CudaEstimateTopK/context:(\d+)/batch:(\d+)/page:(\d+)/fp16:(\d+)")
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def kv_bytes(batch, context):
    """K and V bytes one decode step reads over the whole context."""
    return 2 * batch * context * KV_HEADS * HEAD_DIM * ELEM_BYTES


def parse_bench(report):
    """{"attention": {(context, div, batch, page): {"s", "GBps", "ctas"}},
    "estimate": {(context, batch, page, fp16): {"s", "GBps"}}} from
    kernels_cuda_bench's JSON.
    Benchmarks that were skipped (error_occurred) are left out."""
    attention, estimate = {}, {}
    for b in report.get("benchmarks", []):
        if b.get("error_occurred") or b.get("run_type") == "aggregate":
            continue
        seconds = b["real_time"] * TIME_UNITS[b.get("time_unit", "ns")]
        m = NAME.match(b["name"])
        if m:
            key = tuple(int(x) for x in m.groups())
            attention[key] = {"s": seconds, "GBps": b.get("GBps", 0.0),
                              "ctas": b.get("ctas")}
            continue
        m = ESTIMATE.match(b["name"])
        if m:
            key = tuple(int(x) for x in m.groups())
            estimate[key] = {"s": seconds, "GBps": b.get("GBps", 0.0)}
    return {"attention": attention, "estimate": estimate}


def compare(kvtier, torch_results, contexts, batches):
    """Rows of ratios; each names its reference and its target."""
    rows = []
    d2d = torch_results.get("d2d_GBps")
    for batch in batches:
        for context in contexts:
            ref = torch_results["sdpa"].get((batch, context))
            if ref is None:
                continue
            torch_gbps = kv_bytes(batch, context) / ref["s"] / 1e9
            dense = kvtier["attention"].get((context, 1, batch, 16))
            if dense:
                target = 0.9 if batch >= 16 else (0.7 if context >= 32768 else None)
                rows.append({"what": "dense decode GB/s / torch SDPA GB/s", "batch": batch,
                             "context": context, "kvtier": dense["GBps"], "reference": torch_gbps,
                             "ratio": dense["GBps"] / torch_gbps, "target": target})
            budget = kvtier["attention"].get((context, 8, batch, 32))
            select = kvtier["estimate"].get((context, batch, 32, 1))
            if budget and select:
                step = budget["s"] + select["s"]
                rows.append({"what": "torch SDPA (all) us / kvtier budgeted step (1/8) us",
                             "batch": batch, "context": context, "kvtier": step * 1e6,
                             "reference": ref["s"] * 1e6, "ratio": ref["s"] / step,
                             "target": 4.0 if batch >= 16 and context >= 32768 else None})
            if select and d2d:
                rows.append({"what": "estimate + top-k GB/s / device copy GB/s",
                             "batch": batch, "context": context, "kvtier": select["GBps"],
                             "reference": d2d, "ratio": select["GBps"] / d2d, "target": 0.6})
    return rows


def print_rows(rows, out=sys.stdout):
    print("| what | batch | context | kvtier | reference | ratio | target |", file=out)
    print("|---|---|---|---|---|---|---|", file=out)
    for r in rows:
        target = "" if r["target"] is None else ">= %.1f" % r["target"]
        print("| %s | %d | %d | %.1f | %.1f | %.2f | %s |" % (
            r["what"], r["batch"], r["context"], r["kvtier"], r["reference"], r["ratio"],
            target), file=out)


def time_cuda(torch, fn, iters):
    """Median seconds of `fn` between CUDA events, after two warm-up calls."""
    fn()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    times.sort()
    return times[len(times) // 2]


def measure_torch(contexts, batches, iters):
    import torch
    import torch.nn.functional as F
    if not torch.cuda.is_available():
        raise SystemExit("compare_torch_gpu: torch sees no CUDA device")
    dev = torch.device("cuda")
    results = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "sdpa": {}}
    for batch in batches:
        for context in contexts:
            q = torch.randn(batch, Q_HEADS, 1, HEAD_DIM, device=dev, dtype=torch.float16)
            k = torch.randn(batch, KV_HEADS, context, HEAD_DIM, device=dev, dtype=torch.float16)
            v = torch.randn_like(k)
            s = time_cuda(torch, lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                          iters)
            results["sdpa"][(batch, context)] = {"s": s}
            print("torch sdpa batch %d context %d: %.1f us, %.0f GB/s" % (
                batch, context, s * 1e6, kv_bytes(batch, context) / s / 1e9), file=sys.stderr)
            del q, k, v
            torch.cuda.empty_cache()
    src = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    s = time_cuda(torch, lambda: dst.copy_(src), iters)
    results["d2d_GBps"] = 2 * src.numel() / s / 1e9
    del src, dst
    results["h2d_GBps"] = {}
    for mib in (1, 16, 256):
        host = torch.empty(mib << 20, dtype=torch.uint8, pin_memory=True)
        dev_buf = torch.empty(mib << 20, dtype=torch.uint8, device=dev)
        s = time_cuda(torch, lambda: dev_buf.copy_(host, non_blocking=True), iters)
        results["h2d_GBps"][mib] = (mib << 20) / s / 1e9
    torch.cuda.empty_cache()
    return results


def run_bench(bench, min_time):
    cmd = [bench, "--benchmark_filter=BM_CudaDecodeAttention|BM_CudaEstimateTopK",
           "--benchmark_format=json", "--benchmark_min_time=%s" % min_time]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit("compare_torch_gpu: %s failed (%d): %s" % (
            bench, proc.returncode, proc.stderr[-2000:]))
    return json.loads(proc.stdout)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bench", required=True, help="path of kernels_cuda_bench")
    p.add_argument("--contexts", default="8192,32768,131072")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--iters", type=int, default=50, help="timed calls per torch measurement")
    p.add_argument("--min_time", default="0.2", help="--benchmark_min_time of the kvtier bench")
    p.add_argument("--json", help="write every figure and ratio here")
    args = p.parse_args(argv)
    contexts = [int(x) for x in args.contexts.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    torch_results = measure_torch(contexts, batches, args.iters)
    kvtier = parse_bench(run_bench(args.bench, args.min_time))
    rows = compare(kvtier, torch_results, contexts, batches)
    print("device: %s, torch %s; device copy %.0f GB/s (read + write); pinned host-to-device"
          " %s GB/s" % (torch_results["device"], torch_results["torch"],
                        torch_results["d2d_GBps"],
                        ", ".join("%d MiB %.1f" % (m, g)
                                  for m, g in torch_results["h2d_GBps"].items())))
    print_rows(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": {**torch_results,
                                 "sdpa": {"%d/%d" % k: v
                                          for k, v in torch_results["sdpa"].items()}},
                       "kvtier": {name: {"/".join(str(x) for x in k): v
                                         for k, v in kvtier[name].items()}
                                  for name in ("attention", "estimate")},
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
