#!/usr/bin/env python3
"""kvtier-run --metrics-listen against a real kvtier-server: the endpoint
answers scrapes in a process that loads OpenBLAS (as every worker does) and
reports exactly the counters the run prints on stderr.

Run by CTest: KVTIER_BIN_DIR (kvtier-run, kvtier-server), MODEL_DIR
(stories260K)."""
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ["KVTIER_BIN_DIR"]
MODEL = os.environ["MODEL_DIR"]
PROMPT = ("Once upon a time, there was a little girl named Lily. She loved to play "
          "outside in the park with her friends and her big red ball.")


def wait_for(pattern, path, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            found = re.search(pattern, f.read())
        if found:
            return found
        if proc.poll() is not None:
            with open(path) as f:
                raise RuntimeError(f"exited {proc.returncode}: {f.read()}")
        time.sleep(0.05)
    raise RuntimeError(f"no {pattern!r} in {path}")


def samples(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def run(tmp, target, name):
    err = os.path.join(tmp, name + ".err")
    proc = subprocess.Popen(
        [os.path.join(BIN, "kvtier-run"), "--model", os.path.join(MODEL, "stories260K.bin"),
         "--tokenizer", os.path.join(MODEL, "tok512.bin"), "--prompt", PROMPT, "--steps", "300",
         "--policy", "arkvale", "--budget", "128", "--target", target,
         "--metrics-listen", "127.0.0.1:0", "--metrics-hold-s", "60"],
        stdout=subprocess.DEVNULL, stderr=open(err, "w"))
    try:
        port = int(wait_for(r"metrics on port (\d+)", err, proc).group(1))
        summary = wait_for(r"pages_recalled=(\d+) pages_evicted=(\d+) pages_dropped=(\d+)", err,
                           proc)
        steps = int(wait_for(r"decode layer-steps=(\d+)", err, proc).group(1))
        wait_for(r"serving metrics for", err, proc)
        return samples(port), [int(x) for x in summary.groups()], steps
    finally:
        proc.kill()
        proc.wait()


def main():
    failures = []

    def expect(what, got, want):
        if got != want:
            failures.append(f"{what}: {got}, want {want}")

    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        server = subprocess.Popen(
            [os.path.join(BIN, "kvtier-server"), "--listen", "127.0.0.1:0", "--port_file",
             port_file, "--data_dir", os.path.join(tmp, "data"), "--ram_bytes", str(64 << 20)],
            stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not (os.path.exists(port_file) and open(port_file).read().strip()):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("kvtier-server did not start")
                time.sleep(0.05)
            target = "127.0.0.1:" + open(port_file).read().strip()
            for name in ("first", "second"):
                got, (recalled, evicted, dropped), steps = run(tmp, target, name)
                expect(f"{name}: recalled", got["kvtier_worker_pages_recalled_total"], recalled)
                expect(f"{name}: evicted", got["kvtier_worker_pages_evicted_total"], evicted)
                expect(f"{name}: dropped", got["kvtier_worker_pages_dropped_total"], dropped)
                # One writer: every recalled page is its own.
                expect(f"{name}: foreign recalls",
                       got["kvtier_worker_pages_recalled_foreign_total"], 0)
                expect(f"{name}: decode steps", got["kvtier_worker_decode_steps_total"], steps)
                expect(f"{name}: evictions happened", evicted > 0, True)
                expect(f"{name}: budget known", got["kvtier_worker_budget_pages"] > 0, True)
                decisions = (got['kvtier_worker_prefix_decisions_total{decision="load"}'] +
                             got['kvtier_worker_prefix_decisions_total{decision="recompute"}'])
                # The first run finds nothing stored; the second, the first's prompt.
                expect(f"{name}: prefix decisions", decisions, 0 if name == "first" else 1)
        finally:
            server.terminate()
            server.wait(timeout=30)
    for f in failures:
        print("FAIL", f)
    print(f"{'FAILED' if failures else 'passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
