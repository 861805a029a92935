#!/usr/bin/env python3
"""Caps under overload: the server's RSS and data directory against its caps.

Starts kvtier-server with small caps (RAM tier, disk tier, in-flight bytes),
then drives it with twice the in-flight budget in concurrent inline puts of
large batches, churning through several times RAM + disk, then with as many
concurrent gets of large batches over a working set bigger than RAM. It
samples the server's RSS and the size of its data directory every 0.2 s
and compares the peaks with the bounds

  RSS       <= 1.1 x (ram_bytes + max_inflight_bytes) + 200 MiB
  data dir  <= 1.1 x disk_bytes + 64 MiB

Requests past the in-flight budget are refused (RESOURCE_EXHAUSTED) and
counted and retried after a pause, as are connections gRPC's quota
closes (UNAVAILABLE); any other error, or a page read back with wrong
bytes, fails the run. Exit status 0 when both bounds hold.

  PYTHONPATH=build/python ops/bench/overload.py [--build build]
      [--ram_mib 256] [--disk_mib 256] [--inflight_mib 128] [--clients 16]
      [--batch_pages 64] [--page_kib 256] [--churn 4] [--json out.json]
"""
import argparse
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import kvtier
from benchutil import dir_bytes_by_kind, free_port, memory_of

MIB = 1 << 20


def page_bytes(key, size):
    """Deterministic bytes of a page: any process can check a read."""
    seed = hashlib.blake2b(key, digest_size=32).digest()
    return (seed * (size // len(seed) + 1))[:size]


def layout_of(page_kib):
    # f16, 16 tokens, head_dim 128: page_kib KiB needs page_kib / 8 KV heads.
    return kvtier.PageLayout(page_size=16, n_kv_heads=page_kib // 8, head_dim=128, dtype="f16")


def key_of(n):
    return hashlib.blake2b(n.to_bytes(8, "little"), digest_size=16).digest()


def client_main(args, target, index, phase, first, count, out):
    """Puts (phase 'put') or gets (phase 'get') pages [first, first+count)."""
    layout = layout_of(args.page_kib)
    size = args.page_kib * 1024
    client = kvtier.StoreClient(target, deadline_ms=60000, max_attempts=1)
    done = refused = dropped = 0
    errors = {}
    n = first + index * args.batch_pages
    stride = args.clients * args.batch_pages
    while n < first + count:
        keys = [key_of(k) for k in range(n, min(n + args.batch_pages, first + count))]
        try:
            if phase == "put":
                client.batch_put([(k, 0, layout, page_bytes(k, size)) for k in keys])
            else:
                for k, (status, _tier, data) in zip(keys, client.batch_get([(k, 0) for k in keys])):
                    if status == "ok" and data != page_bytes(k, size):
                        out.put(("fatal", f"wrong bytes for page {k.hex()}"))
                        return
            done += len(keys)
        except kvtier.StoreError as e:
            if e.code in ("RESOURCE_EXHAUSTED", "UNAVAILABLE"):
                # Refused by the service's budget, or the connection closed
                # by gRPC's quota: back off, then the same batch again.
                refused += 1
                dropped += e.code == "UNAVAILABLE"
                time.sleep(0.05)
                continue
            if e.code not in errors:
                print(f"client {index}: {e.code}: {e}", flush=True)
            errors[e.code] = errors.get(e.code, 0) + 1
            if sum(errors.values()) > 100:
                out.put(("fatal", f"{e.code}: {e}"))
                return
        n += stride
    out.put(("done", done, refused, dropped, errors))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--ram_mib", type=int, default=256)
    ap.add_argument("--disk_mib", type=int, default=256)
    ap.add_argument("--inflight_mib", type=int, default=128)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--batch_pages", type=int, default=64)
    ap.add_argument("--page_kib", type=int, default=256)
    ap.add_argument("--churn", type=float, default=4.0,
                    help="bytes put, as a multiple of ram + disk")
    ap.add_argument("--json", default="")
    ap.add_argument("--pmap", default="", help="write the server's pmap -x at its RSS peak here")
    args = ap.parse_args()
    request = args.batch_pages * args.page_kib * 1024
    print(f"{args.clients} clients x {request / MIB:.0f} MiB per request = "
          f"{args.clients * request / MIB:.0f} MiB offered against an in-flight budget of "
          f"{args.inflight_mib} MiB", flush=True)

    work = tempfile.mkdtemp(prefix="kvtier-overload-")
    data_dir = os.path.join(work, "data")
    port = free_port()
    target = f"127.0.0.1:{port}"
    server = subprocess.Popen(
        [os.path.join(args.build, "bin", "kvtier-server"), f"--listen={target}",
         f"--data_dir={data_dir}", f"--ram_bytes={args.ram_mib * MIB}",
         f"--disk_bytes={args.disk_mib * MIB}", f"--max_inflight_bytes={args.inflight_mib * MIB}",
         f"--max_message_bytes={min(args.inflight_mib // 2, 256) * MIB}", "--noucx",
         "--log_level=warning"],
        stdout=open(os.path.join(work, "server.log"), "w"), stderr=subprocess.STDOUT)
    peak = {"rss": 0, "dir": 0, "dir_kinds": {}}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                rss = memory_of(server.pid).get("VmRSS", 0)
                if rss > peak["rss"] and args.pmap:
                    # What the server's memory is at its peak: mappings by size.
                    with open(args.pmap, "w") as f:
                        subprocess.run(["pmap", "-x", str(server.pid)], stdout=f, check=False)
                peak["rss"] = max(peak["rss"], rss)
                kinds = dir_bytes_by_kind(data_dir)
                if sum(kinds.values()) > peak["dir"]:
                    peak["dir"] = sum(kinds.values())
                    peak["dir_kinds"] = kinds
            except (FileNotFoundError, ProcessLookupError):
                pass
            stop.wait(0.2)

    try:
        for _ in range(600):
            try:
                kvtier.StoreClient(target, deadline_ms=1000, max_attempts=1).stats()
                break
            except kvtier.StoreError:
                time.sleep(0.1)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        page = args.page_kib * 1024
        put_pages = int(args.churn * (args.ram_mib + args.disk_mib) * MIB / page)
        get_pages = int(1.5 * args.ram_mib * MIB / page)
        results = {}
        for phase, first, count in (("put", 0, put_pages),
                                    ("get", max(0, put_pages - get_pages), min(get_pages, put_pages))):
            t0 = time.time()
            # spawn, not fork: this process already runs gRPC threads.
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            procs = [ctx.Process(target=client_main, args=(args, target, i, phase, first, count, out))
                     for i in range(args.clients)]
            for p in procs:
                p.start()
            done = refused = dropped = 0
            errors = {}
            for _ in procs:
                msg = out.get()
                if msg[0] == "fatal":
                    raise SystemExit(f"{phase}: {msg[1]}")
                done += msg[1]
                refused += msg[2]
                dropped += msg[3]
                for code, c in msg[4].items():
                    errors[code] = errors.get(code, 0) + c
            for p in procs:
                p.join()
            secs = time.time() - t0
            results[phase] = {"pages": done, "refused_requests": refused,
                              "connections_dropped": dropped, "errors": errors,
                              "seconds": round(secs, 1),
                              "mib_per_s": round(done * page / MIB / secs, 1)}
            print(f"{phase}: {done} pages in {secs:.1f} s ({done * page / MIB / secs:.0f} MiB/s), "
                  f"{refused} requests refused and retried ({dropped} of them UNAVAILABLE: connection "
                  f"closed by gRPC's quota), other errors {errors}; "
                  f"peak RSS {peak['rss'] / MIB:.0f} MiB, peak data dir {peak['dir'] / MIB:.0f} MiB",
                  flush=True)
        stats = kvtier.StoreClient(target).stats()
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)

    rss_bound = 1.1 * (args.ram_mib + args.inflight_mib) * MIB + 200 * MIB
    dir_bound = 1.1 * args.disk_mib * MIB + 64 * MIB
    report = {"args": vars(args), "phases": results,
              "peak_rss_bytes": peak["rss"], "rss_bound_bytes": int(rss_bound),
              "peak_dir_bytes": peak["dir"], "dir_bound_bytes": int(dir_bound),
              "peak_dir_bytes_by_kind": peak["dir_kinds"],
              "demotions": stats["demotions"], "dropped_pages": stats["dropped_pages"],
              "disk_space_refusals": stats["disk_space_refusals"],
              "disk_garbage_collections": stats["disk_garbage_collections"]}
    print(f"RSS peak {peak['rss'] / MIB:.0f} MiB, bound {rss_bound / MIB:.0f} MiB "
          f"(ratio {peak['rss'] / rss_bound:.2f}); data dir peak {peak['dir'] / MIB:.0f} MiB, "
          f"bound {dir_bound / MIB:.0f} MiB (ratio {peak['dir'] / dir_bound:.2f}; at the peak "
          + ", ".join(f"{k} {v / MIB:.0f}" for k, v in sorted(peak["dir_kinds"].items())) + " MiB)")
    print(f"store: {stats['demotions']} demotions, {stats['dropped_pages']} pages dropped, "
          f"{stats['disk_space_refusals']} refused at the directory's bound, "
          f"{stats['disk_garbage_collections']} blob file rewrites")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    ok = peak["rss"] <= rss_bound and peak["dir"] <= dir_bound
    print("caps held" if ok else "CAP EXCEEDED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
