#!/usr/bin/env python3
"""Can one tenant tell whether another stored a page? Latency of probes.

Starts kvtier-server with an access file of two tenants. Tenant A stores
--pages pages (in RAM, and with --disk also on disk only); then tenant B
probes, interleaved at random, A's keys and keys nobody stored, with
Lookup and with BatchGet of one key, and tenant A probes its own keys for
reference (true hits). Prints the latency distribution (p10, p50, p90, p99,
in microseconds) of each kind of probe and the ratio of B's medians, A's
keys over absent keys; 1.0 means B sees no difference.

  PYTHONPATH=build/python ops/bench/tenant_probe.py --build_dir build

Standard library and the kvtier binding only.
"""

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time

import kvtier

TOKEN_A = "tenant-a-probe-token-0123456789"
TOKEN_B = "tenant-b-probe-token-0123456789"


def start_server(build_dir, tmp):
    access = os.path.join(tmp, "access.txt")
    with open(access, "w") as f:
        for tenant, token in (("a", TOKEN_A), ("b", TOKEN_B)):
            digest = hashlib.sha256(token.encode()).hexdigest()
            f.write(f"tenant={tenant} role=tenant token_sha256={digest}\n")
    port_file = os.path.join(tmp, "port")
    proc = subprocess.Popen(
        [os.path.join(build_dir, "bin", "kvtier-server"), "--listen=127.0.0.1:0",
         f"--port_file={port_file}", f"--data_dir={tmp}/data", f"--access_file={access}",
         "--ram_bytes=67108864", "--disk_bytes=268435456", "--noucx", "--log_level=warning"],
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (os.path.exists(port_file) and open(port_file).read().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit("tenant_probe: kvtier-server did not start")
        time.sleep(0.05)
    return proc, "127.0.0.1:" + open(port_file).read().strip()


def percentiles(samples_us):
    s = sorted(samples_us)
    return {p: s[min(len(s) - 1, int(len(s) * p / 100))] for p in (10, 50, 90, 99)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build_dir", default="build")
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--probes", type=int, default=20000, help="per kind of probe")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        proc, target = start_server(args.build_dir, tmp)
        try:
            a = kvtier.StoreClient(target, token=TOKEN_A)
            b = kvtier.StoreClient(target, token=TOKEN_B)
            layout = kvtier.PageLayout(page_size=16, n_kv_heads=2, head_dim=64, dtype="f16")
            stored = [rng.randbytes(16) for _ in range(args.pages)]
            absent = [rng.randbytes(16) for _ in range(args.pages)]
            for i in range(0, len(stored), 64):
                a.batch_put([(k, 0, layout, bytes(layout.page_bytes))
                             for k in stored[i:i + 64]])
            kinds = {"lookup": lambda c, k: c.lookup([k]),
                     "get": lambda c, k: c.batch_get([(k, 0)])}
            results = {}
            for name, call in kinds.items():
                plan = ([("b-of-a", b, k) for k in rng.choices(stored, k=args.probes)] +
                        [("b-absent", b, k) for k in rng.choices(absent, k=args.probes)] +
                        [("a-own", a, k) for k in rng.choices(stored, k=args.probes)])
                rng.shuffle(plan)
                samples = {"b-of-a": [], "b-absent": [], "a-own": []}
                for who, client, key in plan:
                    t = time.perf_counter_ns()
                    call(client, key)
                    samples[who].append((time.perf_counter_ns() - t) / 1000)
                results[name] = {who: percentiles(s) for who, s in samples.items()}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{'probe':<7} {'who':<9} {'p10':>7} {'p50':>7} {'p90':>7} {'p99':>7}  (us)")
    for name, rows in results.items():
        for who, p in rows.items():
            print(f"{name:<7} {who:<9} {p[10]:>7.0f} {p[50]:>7.0f} {p[90]:>7.0f} {p[99]:>7.0f}")
        ratio = rows["b-of-a"][50] / rows["b-absent"][50]
        print(f"{name:<7} B's median, A's keys / absent keys: {ratio:.3f}")
    print("b-of-a: tenant B probing keys tenant A stored; b-absent: B probing keys nobody "
          "stored; a-own: A probing its own keys (hits). One client per tenant, probes "
          "interleaved at random.")


if __name__ == "__main__":
    main()
