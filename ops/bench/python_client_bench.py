#!/usr/bin/env python3
"""Python client throughput beside the C++ client's, in one run.

Starts one kvtier-server (or uses --target) and, for each page size, runs
the C++ client (kvtier-bench, one client) and then the same workload through
the Python package: put (new pages, an unmeasured warm-up round first, then
deleted) and get (random batches of a working set), each for --duration_s.
Python runs twice: put_pages/get_pages (pages from and into one numpy array,
no copies in Python) and batch_put/batch_get (bytes objects). Prints GB/s
(1e9 bytes/s) and the ratio to C++ per op and page size; --json writes them.

  PYTHONPATH=build/python .venv/bin/python ops/bench/python_client_bench.py \
      [--build build] [--page_kib 64,256,1024,4096] [--batch_pages 16] \
      [--duration_s 2] [--rounds 2] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import kvtier
from benchutil import free_port

MIB = 1 << 20


def layout_of(page_bytes):
    """The layout kvtier-bench uses: bf16, head_dim 128, the smallest page_size >= 16."""
    k = page_bytes // (2 * 128 * 2)
    page_size = 16
    while True:
        if k % page_size == 0:
            try:
                return kvtier.PageLayout(page_size, k // page_size, 128, "bf16")
            except kvtier.StoreError:
                pass
        page_size *= 2
        if page_size > k:
            raise ValueError(f"no layout of {page_bytes} bytes")


def cpp_cell(args, target, page_bytes, op):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [os.path.join(args.build, "bin", "kvtier-bench"), f"--target={target}",
             "--clients=1", f"--page_sizes={page_bytes}", f"--batch_pages={args.batch_pages}",
             f"--ops_kinds={op}", f"--duration_ms={int(args.duration_s * 1000)}",
             f"--max_put_bytes={args.put_mib * MIB}",
             f"--get_working_set_bytes={args.working_set_mib * MIB}", f"--json={out.name}"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cells = json.load(open(out.name))
        cells = cells["cells"] if isinstance(cells, dict) else cells
        (cell,) = [c for c in cells if c["op"] == op]
        return cell["gbps"]


def keys_of(nonce, first, count):
    return [((nonce << 64 | i).to_bytes(16, "little"), 0) for i in range(first, first + count)]


def py_put(client, layout, args, nonce, zero_copy):
    batch = args.batch_pages
    data = np.random.default_rng(nonce).integers(0, 256, (batch, layout.page_bytes), np.uint8)
    blobs = [bytes(row) for row in data]
    budget_pages = args.put_mib * MIB // layout.page_bytes
    measured = 0.0
    for round_nonce in (nonce ^ 0x5555, nonce):  # the first round warms the RAM slots
        all_keys = keys_of(round_nonce, 0, budget_pages)  # made before the clock starts
        done = 0
        start = time.perf_counter()
        while done + batch <= budget_pages and time.perf_counter() - start < args.duration_s:
            keys = all_keys[done:done + batch]
            if zero_copy:
                client.put_pages(keys, layout, data)
            else:
                client.batch_put([(h, layer, layout, b) for (h, layer), b in zip(keys, blobs)])
            done += batch
        seconds = time.perf_counter() - start
        for i in range(0, done, 256):
            client.delete(keys_of(round_nonce, i, min(256, done - i)))
        measured = done * layout.page_bytes / seconds / 1e9
    return measured


def py_get(client, layout, args, nonce, zero_copy):
    batch = args.batch_pages
    set_pages = max(batch, args.working_set_mib * MIB // layout.page_bytes)
    keys = keys_of(nonce, 0, set_pages)
    page = np.random.default_rng(nonce).integers(0, 256, layout.page_bytes, np.uint8)
    for i in range(0, set_pages, 16):
        part = keys[i:i + 16]
        client.put_pages(part, layout, [page] * len(part))
    out = np.empty((batch, layout.page_bytes), np.uint8)
    # The random batches are drawn before the clock starts (kvtier-bench
    # draws its own in C++, at no measurable cost): the cell times the client.
    rng = np.random.default_rng(nonce + 1)
    batches = [[keys[j] for j in rng.integers(0, set_pages, batch)] for _ in range(1024)]
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.duration_s:
        want = batches[(done // batch) % len(batches)]
        if zero_copy:
            statuses = client.get_pages(want, out)
        else:
            statuses = [s for s, _tier, _data in client.batch_get(want)]
        if statuses != ["ok"] * batch:
            raise RuntimeError(f"a working-set page was not returned: {statuses}")
        done += batch
    seconds = time.perf_counter() - start
    for i in range(0, set_pages, 256):
        client.delete(keys[i:i + 256])
    return done * layout.page_bytes / seconds / 1e9


def start_server(args, data_dir):
    port = free_port()
    proc = subprocess.Popen(
        [os.path.join(args.build, "bin", "kvtier-server"), f"--listen=127.0.0.1:{port}",
         f"--data_dir={data_dir}", f"--ram_bytes={args.ram_mib * MIB}",
         f"--disk_bytes={args.ram_mib * MIB}"],
        stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            kvtier.StoreClient(target, deadline_ms=1000, max_attempts=1).lookup([bytes(16)])
            return proc, target
        except kvtier.StoreError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kvtier-server did not start")
            time.sleep(0.1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default="build")
    p.add_argument("--target", default="", help="a running server (default: start one)")
    p.add_argument("--page_kib", default="64,256,1024,4096")
    p.add_argument("--batch_pages", type=int, default=16)
    p.add_argument("--duration_s", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=2, help="C++ then Python, this many times")
    p.add_argument("--put_mib", type=int, default=256)
    p.add_argument("--working_set_mib", type=int, default=64)
    p.add_argument("--ram_mib", type=int, default=2048)
    p.add_argument("--json", default="")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        target = args.target
        if not target:
            proc, target = start_server(args, os.path.join(tmp, "data"))
        client = kvtier.StoreClient(target, deadline_ms=60000)
        rows = []
        try:
            sizes = [int(k) * 1024 for k in args.page_kib.split(",")]
            for n, page_bytes in enumerate(sizes):
                layout = layout_of(page_bytes)
                for op, run in (("put", py_put), ("get", py_get)):
                    best = {"cpp": 0.0, "numpy": 0.0, "bytes": 0.0}
                    for r in range(args.rounds):  # best of the rounds, interleaved
                        nonce = (n * 1000 + r) * 10 + (op == "get")
                        best["cpp"] = max(best["cpp"], cpp_cell(args, target, page_bytes, op))
                        best["numpy"] = max(best["numpy"], run(client, layout, args, nonce, True))
                        best["bytes"] = max(best["bytes"],
                                            run(client, layout, args, nonce + 5, False))
                    row = {"op": op, "page_bytes": page_bytes, **{k + "_gbps": v
                                                                 for k, v in best.items()},
                           "numpy_ratio": best["numpy"] / best["cpp"],
                           "bytes_ratio": best["bytes"] / best["cpp"]}
                    rows.append(row)
                    print(f"[{len(rows)}/{2 * len(sizes)}] {op} {page_bytes >> 10} KiB done",
                          file=sys.stderr)
        finally:
            if proc:
                proc.terminate()
                proc.wait(timeout=30)
    print(f"{'op':4} {'page':>9} {'C++ GB/s':>9} {'numpy GB/s':>11} {'ratio':>6} "
          f"{'bytes GB/s':>11} {'ratio':>6}")
    for r in rows:
        print(f"{r['op']:4} {r['page_bytes'] >> 10:>5} KiB {r['cpp_gbps']:9.3f} "
              f"{r['numpy_gbps']:11.3f} {r['numpy_ratio']:6.2f} {r['bytes_gbps']:11.3f} "
              f"{r['bytes_ratio']:6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch_pages": args.batch_pages, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
