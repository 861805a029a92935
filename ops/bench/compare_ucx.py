#!/usr/bin/env python3
"""kvtier's UCX data plane vs ucx_perftest and Redis on the same host, in one run.

For each UCX transport (shm: UCX_TLS=posix,sysv,cma; tcp: UCX_TLS=tcp) and
server mode (secure, the default; segment, the default without direct
transfers on local lanes; trusted, --trusted_local_clients: clients map the
arena) it starts kvtier-server with that UCX_TLS, runs kvtier-bench (put/get, the given
page sizes and client counts, unbatched and batched; over TCP in tagged
mode, as the automatic mode keeps bytes inline there), and runs ucx_perftest
(server and client on loopback, same UCX_TLS) with the same message sizes:
on shared memory, for puts, ucp_put_bw where the client copies into the
mapped arena (chunks of up to 128 KiB, and of 4 MiB and more) and ucp_get
where the server reads the staged pages, and ucp_get for gets (the client reads RAM pages out of
the mapped arena); over TCP tag_bw for both (tagged sends into posted
receives); and tag_bw for all, the reference of the secure mode. It also runs
redis-benchmark against redis-server with the same value sizes and client
counts. It prints kvtier/ucx_perftest and kvtier/Redis GB/s ratios and
writes everything as JSON.

  ops/bench/compare_ucx.py --build_dir build --json compare_ucx.json

ucx_perftest runs one thread: its figure is the single-stream reference for
every client count. Standard library only; every child has a timeout.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import free_port  # noqa: E402
from compare_redis import (ratio, run_redis_benchmark, start_kvtier, start_redis,  # noqa: E402
                           stop)

TRANSPORTS = {"shm": "posix,sysv,cma", "tcp": "tcp"}
# kvtier-bench's put mode per transport. On shared memory the default
# (auto): the client copies into the mapped arena chunks of up to 128 KiB
# (by message) and of 4 MiB and more; the server reads staged pages of the
# others. Over TCP auto keeps bytes inline
# in gRPC (measured faster), so the UCX path is measured with tagged
# messages, the fastest UCX mode there.
PUT_MODE = {"shm": "auto", "tcp": "tagged"}
# StoreClient::kMessagePutMaxBytes and kDirectCopyMinBytes: where auto
# switches on shared memory.
MESSAGE_PUT_MAX_BYTES = 128 << 10
DIRECT_COPY_MIN_BYTES = 4 << 20


def put_reference(tls, size, batch):
    """The ucx_perftest test that moves bytes the way kvtier's put does."""
    if tls == "tcp":
        return "tag_bw"  # tagged messages into posted receives
    # One-sided writes into the peer (client copies into the mapped arena),
    # or one-sided reads of the staged pages by the server.
    chunk = size * batch
    copied = chunk <= MESSAGE_PUT_MAX_BYTES or chunk >= DIRECT_COPY_MIN_BYTES
    return "ucp_put_bw" if copied else "ucp_get"


# Server modes: "trusted" (--trusted_local_clients: clients map the arena
# on one host) and "secure", the default (no client gets server memory; on
# one host clients move bytes through local lanes, memory of their own the
# server copies into and out of, and the reference is tag_bw, a stream into
# the receiver's memory; where the kernel lets it, the server copies
# straight between the client's own buffers and its store), and "segment",
# the secure server with lanes' direct transfers off (every page through
# the lane's segment: two copies). Over TCP the bench turns lanes off, so
# that the UCX path is what it measures.
MODE_ARGS = {"trusted": ["--trusted_local_clients"], "secure": [],
             "segment": ["--nolocal_direct_transfers"]}
SECURE_MODES = ("secure", "segment")


def get_reference(tls):
    # shm: the client reads RAM pages out of the mapped arena (one-sided
    # reads); tcp: tagged sends into posted receives.
    return "tag_bw" if tls == "tcp" else "ucp_get"


def run_kvtier_bench(bench, port, sizes, clients, batch, duration_ms, tmp, tls, mode):
    out = os.path.join(tmp, f"bench-{tls}-{mode}-{batch}.json")
    # kvtier-bench sizes each put cell to a third of the server's arena.
    cmd = [bench, f"--target=127.0.0.1:{port}", "--page_sizes=" + ",".join(map(str, sizes)),
           "--clients=" + ",".join(map(str, clients)), "--ops_kinds=put,get",
           f"--batch_pages={batch}", f"--duration_ms={duration_ms}", f"--json={out}",
           f"--ucx_put_mode={PUT_MODE[tls]}", f"--local_lanes={str(tls == 'shm').lower()}"]
    budget = 120 + 6 * len(sizes) * len(clients) * duration_ms / 1000
    subprocess.run(cmd, check=True, timeout=budget, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, UCX_TLS=TRANSPORTS[tls]))
    with open(out) as f:
        data = json.load(f)
    used_ucx = data.get("ucx_put_pages", 0) > 0 and data.get("ucx_get_pages", 0) > 0
    used_lanes = data.get("lane_put_pages", 0) > 0 and data.get("lane_get_pages", 0) > 0
    # A secure server's UCX has no shared-memory transport: on one host the
    # bytes go through local lanes, and any UCX page would mean the arena
    # was reachable. A trusted server offers no lanes.
    expect_lanes = mode in SECURE_MODES and tls == "shm"
    expect_ucx = not expect_lanes
    if used_ucx != expect_ucx or used_lanes != expect_lanes:
        raise RuntimeError(f"kvtier-bench over {tls} ({mode}): UCX used {used_ucx}, lanes "
                           f"{used_lanes}, expected {expect_ucx}, {expect_lanes}: {data}")
    direct = data.get("lane_direct_put_pages", 0) + data.get("lane_direct_get_pages", 0)
    if mode == "segment" and direct > 0:
        raise RuntimeError(f"kvtier-bench ({mode}): {direct} pages moved directly")
    if mode == "secure" and expect_lanes and direct == 0:
        print("note: the kernel refused direct transfers; secure rows went through "
              "segments", file=sys.stderr)
    return data


def run_perftest(test, size, tls, total_bytes):
    """GB/s (1e9 bytes) of one ucx_perftest run on loopback."""
    port = free_port()
    env = dict(os.environ, UCX_TLS=TRANSPORTS[tls])
    iters = max(100, min(100_000, total_bytes // size))
    server = subprocess.Popen(["ucx_perftest", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        res = subprocess.run(["ucx_perftest", "127.0.0.1", "-p", str(port), "-t", test,
                              "-s", str(size), "-n", str(iters)],
                             env=env, timeout=120, capture_output=True, text=True)
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    for line in res.stdout.splitlines():
        if line.startswith("Final:"):
            # iterations, lat 50%, lat avg, lat overall, bw avg, bw overall (MB/s = 2^20)
            fields = line.split()
            return float(fields[6]) * (1 << 20) / 1e9
    raise RuntimeError(f"ucx_perftest {test} -s {size} over {tls}: no result\n{res.stdout}"
                       f"{res.stderr}")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build_dir", default="build")
    p.add_argument("--page_sizes", default="65536,262144,1048576,4194304")
    p.add_argument("--clients", default="1,2,4,8")
    p.add_argument("--batches", default="1,8", help="pages per put/get RPC")
    p.add_argument("--transports", default="shm,tcp")
    p.add_argument("--modes", default="secure,trusted", help="server modes (MODE_ARGS)")
    p.add_argument("--duration_ms", type=int, default=500, help="per kvtier cell")
    p.add_argument("--perftest_bytes", type=int, default=1 << 30)
    p.add_argument("--redis_bytes", type=int, default=256 << 20)
    p.add_argument("--ram_bytes", type=int, default=2 << 30)
    p.add_argument("--json", default="compare_ucx.json")
    args = p.parse_args()
    server = os.path.join(args.build_dir, "bin", "kvtier-server")
    bench = os.path.join(args.build_dir, "bin", "kvtier-bench")
    sizes = [int(s) for s in args.page_sizes.split(",")]
    clients = [int(c) for c in args.clients.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    transports = args.transports.split(",")
    for tool in (server, bench, shutil.which("ucx_perftest"), shutil.which("redis-server"),
                 shutil.which("redis-benchmark")):
        if not tool or not os.access(tool, os.X_OK):
            sys.exit(f"compare_ucx: missing executable {tool}")

    tmp = tempfile.mkdtemp(prefix="kvtier-vs-ucx-")
    started = time.monotonic()
    rows, perftest, redis_rows = [], {}, {}
    redis = None
    try:
        redis, redis_port = start_redis(tmp)
        for size in sizes:
            for n in clients:
                requests = max(200, min(100_000, args.redis_bytes // size))
                print(f"redis-benchmark -d {size} -c {n} -n {requests}", file=sys.stderr)
                redis_rows[(size, n)] = run_redis_benchmark(redis_port, size, n, requests)
        for tls in transports:
            for size in sizes:
                for test in ("ucp_get", "ucp_put_bw", "tag_bw"):
                    print(f"ucx_perftest -t {test} -s {size} UCX_TLS={TRANSPORTS[tls]}",
                          file=sys.stderr)
                    perftest[(tls, test, size)] = run_perftest(test, size, tls,
                                                               args.perftest_bytes)
            for mode, batch in [(m, b) for m in args.modes.split(",") for b in batches]:
                kv = None
                try:
                    kv, port = start_kvtier(server, tmp, args.ram_bytes, name=f"kvtier-{tls}",
                                            env=dict(os.environ, UCX_TLS=TRANSPORTS[tls]),
                                            extra_args=MODE_ARGS[mode])
                    print(f"kvtier-bench over {tls}, {mode}, batch {batch}", file=sys.stderr)
                    data = run_kvtier_bench(bench, port, sizes, clients, batch,
                                            args.duration_ms, tmp, tls, mode)
                finally:
                    stop(kv, "kvtier-server")
                for c in data["cells"]:
                    op, size, n = c["op"], c["page_bytes"], c["clients"]
                    if mode in SECURE_MODES:
                        ref_test = "tag_bw"
                    else:
                        ref_test = (put_reference(tls, size, batch) if op == "put"
                                    else get_reference(tls))
                    ref = perftest[(tls, ref_test, size)]
                    r = redis_rows[(size, n)]["SET" if op == "put" else "GET"]
                    rows.append({
                        "mode": mode, "transport": tls, "op": op, "page_bytes": size,
                        "batch": batch,
                        "clients": n, "kvtier_gbps": c["gbps"], "kvtier_p99_us": c["p99_us"],
                        "perftest_test": ref_test, "perftest_gbps": ref,
                        "perftest_ratio": ratio(c["gbps"], ref),
                        "tag_bw_gbps": perftest[(tls, "tag_bw", size)],
                        "redis_gbps": r["gbps"], "redis_ratio": ratio(c["gbps"], r["gbps"]),
                    })
    finally:
        stop(redis, "redis-server")
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'mode':<7} {'tls':<4} {'op':<4} {'page':>9} {'batch':>5} {'cl':>3} {'kvtier':>8} "
          f"{'perftest':>9} {'x':>6} {'tag_bw':>8} {'redis':>7} {'x':>6} {'p99us':>8}")
    for r in rows:
        print(f"{r['mode']:<7} {r['transport']:<4} {r['op']:<4} {r['page_bytes'] >> 10:>5} KiB {r['batch']:>5} "
              f"{r['clients']:>3} {r['kvtier_gbps']:>8.3f} {r['perftest_gbps']:>9.3f} "
              f"{r['perftest_ratio']:>6.2f} {r['tag_bw_gbps']:>8.3f} {r['redis_gbps']:>7.3f} "
              f"{r['redis_ratio']:>6.2f} {r['kvtier_p99_us']:>8.0f}")
    print("GB/s (1e9 B/s). x = kvtier / reference. perftest: shm: for puts ucp_put_bw when "
          "the client copies into the mapped arena (chunks of up to 128 KiB, and of 4 MiB and "
          "more), else ucp_get "
          "(the server reads the staged pages); ucp_get for gets (the client reads the "
          "mapped arena); "
          "tcp (kvtier in tagged mode): tag_bw for both; one stream. Modes secure (the "
          "default server) and segment: tag_bw for both.")
    with open(args.json, "w") as f:
        json.dump({"seconds": time.monotonic() - started, "args": vars(args), "rows": rows},
                  f, indent=1)
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
