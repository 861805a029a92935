#!/usr/bin/env python3
"""Soak test of a kvtier store: N mixed clients for a while, then consistency.

  ops/bench/soak.py --build_dir build [--clients 8] [--duration 600] \\
      [--page_bytes 65536] [--seed 1] [--target HOST:PORT] [--keep]

ops/README.md (soak.py) describes what the clients do and what is checked.
Exits 0 when every check passes, 1 otherwise, 2 on a usage error.
Standard library and the kvtier binding (build/python) only.
"""

import argparse
import collections
import os
import queue as queue_module
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from benchutil import dir_bytes_by_kind, memory_of
from soak_client import (EXPECTED, LAYERS, OWN_KEYS, QUARANTINE_S, SHARED_KEYS, KeySpace, Pages,
                         client_main)


def human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return "%.1f %s" % (n, unit)
        n /= 1024


def fmt(counter):
    return " ".join("%s=%d" % kv for kv in sorted(counter.items(), key=lambda kv: -kv[1])) \
        or "none"


def start_server(args, run_dir):
    port_file = os.path.join(run_dir, "port")
    cmd = [os.path.join(args.build_dir, "bin", "kvtier-server"), "--listen", "127.0.0.1:0",
           "--port_file", port_file, "--data_dir", os.path.join(run_dir, "data"),
           "--ram_bytes", str(args.ram_bytes), "--disk_bytes", str(args.disk_bytes)]
    # The soak drives the data plane's every path, the mapped arena's
    # included, unless --secure asks for the default, untrusting server
    # (whose data plane no client on this host reaches: bytes go inline).
    if not args.secure:
        cmd.append("--trusted_local_clients")
    cmd += args.server_arg
    log = open(os.path.join(run_dir, "server.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    STARTED.append(proc)
    deadline = time.monotonic() + 60
    while not (os.path.exists(port_file) and open(port_file).read().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("kvtier-server did not start; see %s/server.log" % run_dir)
        time.sleep(0.05)
    print("server: %s" % " ".join(cmd), flush=True)
    return proc, "127.0.0.1:" + open(port_file).read().strip()


class Soak:
    def __init__(self, args, kvtier):
        self.args, self.kvtier = args, kvtier
        self.run_dir = tempfile.mkdtemp(prefix="kvtier-soak-")
        self.data_dir = os.path.join(self.run_dir, "data")
        self.server, self.target = None, args.target
        if not args.target:
            self.server, self.target = start_server(args, self.run_dir)
        self.failures, self.notes = [], []
        self.peak_hwm = self.peak_dir = 0
        self.peak_dir_kinds = {}
        n = args.inline_every
        self.inline = {c for c in range(args.clients) if n > 0 and c % n == n - 1}

    def check(self, ok, what):
        print("  %-4s %s" % ("ok" if ok else "FAIL", what), flush=True)
        if not ok:
            self.failures.append(what)

    def sample(self):
        """Peak server RSS and data dir size; the current values."""
        mem = memory_of(self.server.pid) if self.server else {}
        self.peak_hwm = max(self.peak_hwm, mem.get("VmHWM", 0))
        kinds = dir_bytes_by_kind(self.data_dir) if self.server else {}
        size = sum(kinds.values())
        if size > self.peak_dir:
            self.peak_dir, self.peak_dir_kinds = size, kinds
        return mem.get("VmRSS", 0), size

    def run_clients(self, ctl):
        """Runs the clients; returns their summed ops, counts and errors."""
        import multiprocessing as mp
        args = self.args
        ctx = mp.get_context("spawn")
        queue, stop = ctx.Queue(), ctx.Event()
        start = time.monotonic()
        cfg = {"target": self.target, "seed": args.seed, "page_bytes": args.page_bytes,
               "run_dir": self.run_dir, "deadline": start + args.duration,
               "inline": self.inline}
        procs = [ctx.Process(target=client_main, args=(cfg, cid, queue, stop), daemon=True)
                 for cid in range(args.clients)]
        for p in procs:
            p.start()
        snaps, done = {}, set()
        last_print, last_ops, next_sample = start, 0, start
        while len(done) < len(procs):
            try:
                kind, cid, payload = queue.get(timeout=0.5)
                if kind == "fatal":
                    self.check(False, payload)
                else:
                    snaps[cid] = payload
                    if kind == "done":
                        done.add(cid)
            except queue_module.Empty:
                pass
            now = time.monotonic()
            problem = None
            if self.server and self.server.poll() is not None:
                problem = "kvtier-server exited with status %s" % self.server.returncode
            elif any(p.exitcode not in (0, None) for p in procs):
                problem = "client processes died: exit codes %s" % [p.exitcode for p in procs]
            elif now > start + args.duration + 180:
                problem = "clients %s did not finish" % sorted(set(range(len(procs))) - done)
            if problem:
                self.check(False, problem + " during the run")
                stop.set()
                break
            if now >= next_sample:
                rss, size = self.sample()
                next_sample = now + 1
            if now - last_print >= 10:
                ops = sum(v for s in snaps.values() for k, v in s["ops"].items()
                          if k != "reconnect")
                try:
                    st = ctl.stats()
                    tiers = "ram %d disk %d pages, quarantined %s" % (
                        st["ram"]["pages"], st["disk"]["pages"], human(st["quarantined_bytes"]))
                except self.kvtier.StoreError as e:
                    tiers = "Stats failed: %s" % e.code
                errors = collections.Counter()
                for s in snaps.values():
                    errors.update(s["errors"])
                print("[%4.0fs] %8d ops %7.1f ops/s | %s | rss %s | data %s | errors %s" % (
                    now - start, ops, (ops - last_ops) / (now - last_print), tiers, human(rss),
                    human(size), fmt(errors)), flush=True)
                last_print, last_ops = now, ops
        self.elapsed = time.monotonic() - start
        stop.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        total = {f: collections.Counter() for f in ("ops", "counts", "errors")}
        for s in snaps.values():
            for f in total:
                total[f].update(s[f])
        return total["ops"], total["counts"], total["errors"]

    def report_run(self, ops, counts, errors):
        args = self.args
        n = sum(v for k, v in ops.items() if k != "reconnect")
        print("\n== run: %.0f s, %d ops (%.1f ops/s), %d reconnects" % (
            self.elapsed, n, n / self.elapsed, ops["reconnect"]))
        print("ops: " + fmt(ops))
        print("pages: put new %d, duplicate %d; got ram %d, disk %d, not found %d; deleted %d" % (
            counts["put_new"], counts["put_dup"], counts["get_ram"], counts["get_disk"],
            counts["get_not_found"], counts["deleted"]))
        print("errors by code: " + fmt(errors))
        unexpected = collections.Counter()
        for key, count in errors.items():
            op, code = key.split(":")
            if code not in EXPECTED.get(op, ()):
                unexpected[key] = count
        self.check(not unexpected, "no unexpected error codes%s" % (
            ": " + fmt(unexpected) if unexpected else ""))
        no_plane = set()
        for cid in range(args.clients):
            with open(os.path.join(self.run_dir, "client%d.log" % cid), errors="replace") as f:
                if "data plane not opened" in f.read():
                    no_plane.add(cid)
        if args.secure:
            self.check(no_plane == set(range(args.clients)), "no client's data plane opened "
                       "on a server that does not trust its clients (%s did not)"
                       % sorted(no_plane))
        else:
            self.check(no_plane == self.inline, "clients whose data plane did not open %s == "
                       "those with UCX_TLS=tcp %s" % (sorted(no_plane), sorted(self.inline)))

    def wait_stats(self, ctl, done, until):
        """Polls Stats until done(stats) or monotonic time `until`; (stats, time waited)."""
        t = time.monotonic()
        while True:
            st = ctl.stats()
            if done(st) or time.monotonic() >= until:
                return st, time.monotonic() - t
            time.sleep(0.1)

    def check_store(self, ctl, s0, counts, ended):
        print("\n== consistency", flush=True)
        check = self.check
        st = ctl.stats()
        check(st["active_pins"] == st["ram"]["pinned_pages"] == st["disk"]["pinned_pages"] == 0,
              "active_pins %d, pinned pages ram %d disk %d after the clients unpinned" % (
                  st["active_pins"], st["ram"]["pinned_pages"], st["disk"]["pinned_pages"]))
        st, waited = self.wait_stats(ctl, lambda s: s["reserved_bytes"] == 0, time.monotonic() + 2)
        check(st["reserved_bytes"] == 0, "reserved_bytes %d after %.1f s" % (
            st["reserved_bytes"], waited))
        st, _ = self.wait_stats(ctl, lambda s: s["quarantined_bytes"] == 0,
                                ended + QUARANTINE_S + 2)
        check(st["quarantined_bytes"] == 0,
              "quarantined_bytes %d %.1f s after the clients ended (limit: %.0f s quarantine + 2)"
              % (st["quarantined_bytes"], time.monotonic() - ended, QUARANTINE_S))
        if s0["ram"]["pages"] + s0["disk"]["pages"]:
            self.notes.append("the store held %d RAM + %d disk pages at start: page-count "
                              "checks skipped" % (s0["ram"]["pages"], s0["disk"]["pages"]))
            return

        args = self.args
        spaces = [KeySpace(args.seed, "c%d" % c, OWN_KEYS) for c in range(args.clients)]
        spaces.append(KeySpace(args.seed, "shared", SHARED_KEYS))
        slot_bytes = 1 << max(12, (args.page_bytes - 1).bit_length())

        def grown(st, name):
            return st[name] - s0[name]

        def tier_checks(label):
            """Lookup of every key against Stats; returns (keys found, stats)."""
            ram, disk = [], []
            for sp in spaces:
                for b in range(0, len(sp.hashes), 16384):
                    chain = sp.hashes[b:b + 16384]
                    for j, t in enumerate(ctl.lookup(chain, 0, LAYERS)[1]):
                        if t != "none":
                            (ram if t == "ram" else disk).append((chain[j // LAYERS], j % LAYERS))
            st = ctl.stats()
            found, both = len(ram) + len(disk), st["disk"]["pages"] - len(disk)
            print("  %s: Lookup finds %d pages in RAM, %d on disk only; Stats ram.pages %d, "
                  "disk.pages %d" % (label, len(ram), len(disk), st["ram"]["pages"],
                                     st["disk"]["pages"]))
            check(st["ram"]["pages"] == len(ram), "ram.pages %d == keys Lookup finds in RAM %d"
                  % (st["ram"]["pages"], len(ram)))
            check(0 <= both <= st["ram"]["pages"], "disk.pages - disk-only keys (pages in both "
                  "tiers) %d within [0, ram.pages]" % both)
            expect = grown(st, "put_pages") - counts["deleted"] - grown(st, "dropped_pages") - \
                grown(st, "lost_pages")
            check(expect == found, "put_pages %d - deleted %d - dropped_pages %d - lost_pages %d "
                  "= %d == pages found %d" % (grown(st, "put_pages"), counts["deleted"],
                                              grown(st, "dropped_pages"),
                                              grown(st, "lost_pages"), expect, found))
            check(st["disk"]["used_bytes"] == st["disk"]["pages"] * args.page_bytes,
                  "disk.used_bytes %d == disk.pages x %d" % (st["disk"]["used_bytes"],
                                                             args.page_bytes))
            check(st["ram"]["used_bytes"] == st["ram"]["pages"] * slot_bytes,
                  "ram.used_bytes %d == ram.pages x %d-byte slots" % (st["ram"]["used_bytes"],
                                                                     slot_bytes))
            return ram + disk, st

        keys, st = tier_checks("after the run")
        for field, told in (("put_pages", "put_new"), ("put_duplicate_pages", "put_dup"),
                            ("get_misses", "get_not_found")):
            check(grown(st, field) == counts[told], "%s %d == the clients' count %d"
                  % (field, grown(st, field), counts[told]))

        pages = Pages(args.seed, args.page_bytes)
        lost, missing, wrong = [], [], []
        t = time.monotonic()
        for b in range(0, len(keys), 64):
            chunk = keys[b:b + 64]
            for (h, layer), (status, tier, data) in zip(chunk, ctl.batch_get(chunk)):
                name = "%s layer %d" % (h.hex(), layer)
                if status == "lost":
                    lost.append(name)
                elif status != "ok":
                    missing.append("%s %s" % (name, status))
                elif data != pages.page(h, layer):
                    wrong.append("%s from %s: %s" % (name, tier, pages.mismatch(h, layer, data)))
        print("  read back %d pages in %.1f s: %d lost, %d missing, %d wrong" % (
            len(keys), time.monotonic() - t, len(lost), len(missing), len(wrong)))
        check(not wrong, "every page read back has its bytes" + "; ".join([""] + wrong[:3]))
        check(not missing, "every page Lookup found is readable" + "; ".join([""] + missing[:3]))
        st2 = ctl.stats()
        check(st2["lost_pages"] - st["lost_pages"] == len(lost), "lost_pages grew by %d == "
              "pages read back lost %d" % (st2["lost_pages"] - st["lost_pages"], len(lost)))
        check(st2["get_misses"] == st["get_misses"], "get_misses unchanged by the read-back")
        keys2, st = tier_checks("after the read-back")
        check(len(keys2) == len(keys) - len(lost), "pages found after the read-back %d == "
              "before %d - lost %d" % (len(keys2), len(keys), len(lost)))
        print("  store: demotions %d, promotions %d, evictions ram %d disk %d, dropped %d, "
              "lost %d, hits ram %d disk %d" % (
                  st["demotions"], st["promotions"], st["ram"]["evictions"],
                  st["disk"]["evictions"], st["dropped_pages"], st["lost_pages"],
                  st["ram"]["hits"], st["disk"]["hits"]))
        if not (st["demotions"] and st["dropped_pages"]):
            self.notes.append("the run did not both demote and drop pages: a longer run or "
                              "smaller tiers would")

    def finish(self, ram_cap):
        print("\n== server")
        server = self.server
        if server is not None:
            alive = server.poll() is None
            rss, size = self.sample()
            print("  alive: %s; RSS %s, peak %s (%.2fx the RAM tier's %s); data dir %s, "
                  "peak %s" % ("yes" if alive else "NO", human(rss), human(self.peak_hwm),
                               self.peak_hwm / ram_cap, human(ram_cap), human(size),
                               human(self.peak_dir)))
            print("  data dir at its peak: " + ", ".join(
                "%s %s" % (k, human(v)) for k, v in sorted(self.peak_dir_kinds.items())))
            log = open(os.path.join(self.run_dir, "server.log")).read().splitlines()
            bad = [line for line in log if " WARNING " in line or " ERROR " in line]
            print("  server log: %d lines, %d warnings/errors%s" % (
                len(log), len(bad), "".join("\n    " + line[:200] for line in bad[:10])))
            if not alive:
                self.failures.append("kvtier-server died (status %s)" % server.returncode)
            else:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    server.kill()
                if server.returncode != 0:
                    self.failures.append("kvtier-server exited with status %s after SIGTERM"
                                         % server.returncode)
        for n in self.notes:
            print("note: " + n)
        if self.failures:
            print("\nSOAK FAILED (%d): run dir kept at %s" % (len(self.failures), self.run_dir))
            for f in self.failures:
                print("  - " + f.splitlines()[0][:300])
            return 1
        print("\nSOAK PASSED")
        if self.args.keep:
            print("run dir kept at %s" % self.run_dir)
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build_dir", default=os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "build"))
    ap.add_argument("--target", help="a running server instead of one started here")
    ap.add_argument("--clients", type=int, default=8, help="1..16 (default 8)")
    ap.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    ap.add_argument("--page_bytes", type=int, default=65536,
                    help="a multiple of 8192, up to 2 MiB (default 65536)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ram_bytes", type=int, default=64 << 20)
    ap.add_argument("--disk_bytes", type=int, default=256 << 20)
    ap.add_argument("--inline_every", type=int, default=4,
                    help="every Nth client runs with UCX_TLS=tcp (bytes inline); 0: none")
    ap.add_argument("--secure", action="store_true",
                    help="a server without --trusted_local_clients (the default server)")
    ap.add_argument("--server_arg", action="append", default=[],
                    help="extra kvtier-server flag (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the run dir (kept on failure)")
    args = ap.parse_args()
    if not 1 <= args.clients <= 16:
        ap.error("--clients must be in 1..16")
    if args.page_bytes % 8192 or not 8192 <= args.page_bytes <= (2 << 20):
        ap.error("--page_bytes must be a multiple of 8192 in [8192, 2 MiB]")

    sys.path.insert(0, os.path.join(args.build_dir, "client", "python"))  # clients inherit it
    import kvtier
    soak = Soak(args, kvtier)
    print("run dir %s, target %s, %d clients, %.0f s, %d-byte pages, seed %d" % (
        soak.run_dir, soak.target, args.clients, args.duration, args.page_bytes, args.seed),
        flush=True)
    ctl = kvtier.StoreClient(soak.target, deadline_ms=60000)
    s0 = ctl.stats()
    ops, counts, errors = soak.run_clients(ctl)
    ended = time.monotonic()
    soak.report_run(ops, counts, errors)
    if soak.server is None or soak.server.poll() is None:
        soak.check_store(ctl, s0, counts, ended)
    return soak.finish(s0["ram"]["capacity_bytes"])


STARTED = []  # the server this run started, stopped if the driver itself fails

if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        for proc in STARTED:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
        print("SOAK FAILED: the driver failed (above)")
        sys.exit(1)
