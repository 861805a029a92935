#!/usr/bin/env python3
"""kvtier vs Redis on the same host, in one run.

Starts kvtier-server (temporary data dir) and Debian's redis-server (temporary
dir, a free port, no persistence) on loopback, runs kvtier-bench (put/get) and
redis-benchmark (SET/GET with -d = the same value sizes and -c = the same
concurrency), prints kvtier/Redis ratios of GB/s and p99 latency per page size
and concurrency, writes everything as JSON, and stops both servers.

  ops/bench/compare_redis.py --build_dir build --json compare.json

Standard library only. The run is bounded: each kvtier cell lasts
--duration_ms, each redis-benchmark run at most --redis_bytes of values
(and at least 200 requests), and every child process has a timeout.
"""

import argparse
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from benchutil import free_port


def wait_until(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def redis_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def stop(proc, name):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop on SIGTERM; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()


def start_kvtier(server, tmp, ram_bytes, name="kvtier", env=None, extra_args=()):
    """Starts kvtier-server on a free loopback port with a fresh data dir under
    `tmp`; `name` names its port and log files, `env` its environment,
    `extra_args` are more flags. Its RAM
    tier is committed at start (--prefault_ram), as a long-running server's
    is, and as Redis' memory is after its first writes."""
    port_file = os.path.join(tmp, f"{name}.port")
    if os.path.exists(port_file):
        os.remove(port_file)  # a previous server's port
    log = open(os.path.join(tmp, f"{name}.log"), "w")
    proc = subprocess.Popen(
        [server, "--listen=127.0.0.1:0", f"--port_file={port_file}",
         f"--data_dir={tempfile.mkdtemp(prefix=f'{name}-data-', dir=tmp)}",
         f"--ram_bytes={ram_bytes}", "--prefault_ram", "--log_level=warning", *extra_args],
        stdout=log, stderr=log, env=env)

    def ready():
        if proc.poll() is not None:
            raise RuntimeError(f"kvtier-server exited with {proc.returncode}; see {log.name}")
        try:
            with open(port_file) as f:
                return f.read().strip().isdigit()
        except OSError:
            return False
    wait_until(ready, 60, "kvtier-server's port file")
    with open(port_file) as f:
        return proc, int(f.read().strip())


def start_redis(tmp):
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp, "--protected-mode", "no",
         "--logfile", os.path.join(tmp, "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def ready():
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        return redis_ping(port)
    wait_until(ready, 30, "redis-server")
    return proc, port


def run_kvtier_bench(bench, port, sizes, clients, duration_ms, transport, tmp):
    out = os.path.join(tmp, "kvtier-bench.json")
    cmd = [bench, f"--target=127.0.0.1:{port}", "--page_sizes=" + ",".join(map(str, sizes)),
           "--clients=" + ",".join(map(str, clients)), "--ops_kinds=put,get",
           f"--duration_ms={duration_ms}", f"--json={out}",
           "--ucx" if transport == "ucx" else "--noucx"]
    budget = 120 + 4 * len(sizes) * len(clients) * duration_ms / 1000
    subprocess.run(cmd, check=True, timeout=budget, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def run_redis_benchmark(port, size, clients, requests):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get",
           "-d", str(size), "-c", str(clients), "-n", str(requests), "--csv", "-q"]
    res = subprocess.run(cmd, check=True, timeout=300, capture_output=True, text=True)
    rows = {}
    for row in csv.DictReader(io.StringIO(res.stdout)):
        rows[row["test"].upper()] = {
            "rps": float(row["rps"]),
            "p50_us": 1000 * float(row["p50_latency_ms"]),
            "p99_us": 1000 * float(row["p99_latency_ms"]),
            "gbps": float(row["rps"]) * size / 1e9,
            "requests": requests,
        }
    if "SET" not in rows or "GET" not in rows:
        raise RuntimeError(f"unexpected redis-benchmark output: {res.stdout!r}")
    return rows


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build_dir", default="build")
    p.add_argument("--server", help="kvtier-server (default BUILD/bin/kvtier-server)")
    p.add_argument("--bench", help="kvtier-bench (default BUILD/bin/kvtier-bench)")
    p.add_argument("--page_sizes", default="65536,262144,1048576,4194304")
    p.add_argument("--clients", default="1,2,4,8")
    p.add_argument("--duration_ms", type=int, default=1000, help="per kvtier cell")
    p.add_argument("--redis_bytes", type=int, default=1 << 30,
                   help="value bytes per redis-benchmark test (sets -n)")
    p.add_argument("--ram_bytes", type=int, default=2 << 30, help="kvtier RAM tier")
    p.add_argument("--transport", choices=["inline", "ucx"], default="inline",
                   help="how kvtier moves page bytes: inline in gRPC messages, or the UCX "
                        "data plane (compare_ucx.py also compares UCX with ucx_perftest)")
    p.add_argument("--json", default="compare_redis.json")
    args = p.parse_args()
    server = args.server or os.path.join(args.build_dir, "bin", "kvtier-server")
    bench = args.bench or os.path.join(args.build_dir, "bin", "kvtier-bench")
    sizes = [int(s) for s in args.page_sizes.split(",")]
    clients = [int(c) for c in args.clients.split(",")]
    for tool in (server, bench, shutil.which("redis-server"), shutil.which("redis-benchmark")):
        if not tool or not os.access(tool, os.X_OK):
            sys.exit(f"compare_redis: missing executable {tool}")

    tmp = tempfile.mkdtemp(prefix="kvtier-vs-redis-")
    kv = redis = None
    started = time.monotonic()
    try:
        kv, kv_port = start_kvtier(server, tmp, args.ram_bytes)
        redis, redis_port = start_redis(tmp)
        print(f"kvtier-server on {kv_port}, redis-server on {redis_port}, temp {tmp}",
              file=sys.stderr)
        kvtier = run_kvtier_bench(bench, kv_port, sizes, clients, args.duration_ms,
                                  args.transport, tmp)
        cells = {(c["op"], c["page_bytes"], c["clients"]): c for c in kvtier["cells"]}
        rows = []
        for size in sizes:
            for n in clients:
                requests = max(200, min(100_000, args.redis_bytes // size))
                print(f"redis-benchmark -d {size} -c {n} -n {requests}", file=sys.stderr)
                r = run_redis_benchmark(redis_port, size, n, requests)
                for op, test in (("put", "SET"), ("get", "GET")):
                    k = cells[(op, size, n)]
                    rows.append({
                        "op": op, "page_bytes": size, "clients": n,
                        "kvtier_gbps": k["gbps"], "redis_gbps": r[test]["gbps"],
                        "gbps_ratio": ratio(k["gbps"], r[test]["gbps"]),
                        "kvtier_p99_us": k["p99_us"], "redis_p99_us": r[test]["p99_us"],
                        "p99_ratio": ratio(k["p99_us"], r[test]["p99_us"]),
                        "redis": r[test], "kvtier": k,
                    })
    finally:
        stop(kv, "kvtier-server")
        stop(redis, "redis-server")
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"kvtier page bytes: {'inline in gRPC' if args.transport == 'inline' else 'UCX data plane'}")
    print(f"{'op':<4} {'page':>9} {'clients':>7} {'kvtier GB/s':>12} {'redis GB/s':>11} "
          f"{'ratio':>6} {'kvtier p99us':>13} {'redis p99us':>12} {'ratio':>6}")
    for r in rows:
        print(f"{r['op']:<4} {r['page_bytes'] >> 10:>5} KiB {r['clients']:>7} "
              f"{r['kvtier_gbps']:>12.3f} {r['redis_gbps']:>11.3f} {r['gbps_ratio']:>6.2f} "
              f"{r['kvtier_p99_us']:>13.0f} {r['redis_p99_us']:>12.0f} {r['p99_ratio']:>6.2f}")
    print("ratio = kvtier / redis (GB/s: higher is better for kvtier; p99: lower is better)")
    with open(args.json, "w") as f:
        json.dump({"seconds": time.monotonic() - started, "duration_ms": args.duration_ms,
                   "transport": args.transport,
                   "redis_bytes": args.redis_bytes, "rows": rows}, f, indent=1)
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
