#!/usr/bin/env python3
"""kvtier-eval needles, continuation, digests and prefix on stories260K.

needles: the cases it builds, the rows it reports (the full cache agrees
with the dense reference and holds the whole context; budgeted policies hold
less; counts, accuracy and Wilson intervals agree with the outcomes) and the
errors bad flags give; with XKV and LU-KV budgets, the policies that budget
layers run once per allocator and the calibration files are removed; at
equal memory (--budget_unit memory) no policy holds more than its share in
any layer (ArkVale and Quest included).
continuation: the full cache reproduces the
reference over every length, budgeted rows are well formed, bad lengths are
refused. digests: one row per (page size, digest, selection, k), every
query ranked, recall and mass in range and mass growing with k, bad page
sizes refused. prefix: one shared document through an in-process store,
its row consistent with what was loaded, the hand-off timed apart.
longrun: the main job's run in-process on a prose and the landmark
document; an unknown document refused.

Run by CTest: KVTIER_BIN_DIR (kvtier-eval), MODEL_DIR (stories260K),
KVTIER_ROOT (the source tree, for ops/eval/needle_report.py)."""
import glob
import json
import math
import os
import subprocess
import sys
import tempfile

BIN = os.path.join(os.environ["KVTIER_BIN_DIR"], "kvtier-eval")
MODEL = os.environ["MODEL_DIR"]
MODEL_FLAGS = ["--model", os.path.join(MODEL, "stories260K.bin"), "--tokenizer",
               os.path.join(MODEL, "tok512.bin"), "--python", sys.executable]
NEEDLES = ["needles"] + MODEL_FLAGS


def wilson(c, n, z=1.96):
    p = c / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run_eval(args, out):
    """Runs kvtier-eval with `args` writing its JSON to `out`; it must
    succeed. Returns the process and the report."""
    run = subprocess.run([BIN] + args + ["--json", out], capture_output=True, text=True,
                         timeout=600)
    check(run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}")
    with open(out) as f:
        return run, json.load(f)


def expect_refused(args, message):
    """kvtier-eval with `args` exits 1 naming `message`."""
    bad = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=120)
    check(bad.returncode == 1 and message in bad.stderr, (args, bad.stderr[-500:]))


def needles():
    with tempfile.TemporaryDirectory() as tmp:
        run, rep = run_eval(
            NEEDLES + ["--needle_contexts", "512", "--cases", "3", "--depths", "0,0.5,1",
                       "--policies", "full,quest,arkvale,streaming_llm,arkv", "--budgets", "4"],
            os.path.join(tmp, "needles.json"))
        check("needles 512 arkvale 1/4 layer_tokens uniform:" in run.stderr, run.stderr[-2000:])
        cases = rep["cases"]
        check(len(cases) == 3, cases)
        check([c["task"] for c in cases] == ["passkey", "kv", "passkey"], cases)
        check([c["filler"] for c in cases] == ["landmark", "landmark", "travel"], cases)
        check([c["depth"] for c in cases] == [0.0, 0.5, 1.0], cases)
        for c in cases:
            check(c["prompt_tokens"] + c["answer_tokens"] <= 512, c)
            check(c["prompt_tokens"] > 448, c)  # the filler fills the context
            check(len(c["key"]) == 6 and c["key"].isdigit(), c)
        rows = {r["policy"]: r for r in rep["results"]}
        check(sorted(rows) == ["arkv", "arkvale", "full", "quest", "streaming_llm"], rows.keys())
        full = rows["full"]
        check(full["greedy_agreement"] == 1.0 and full["mean_kl"] < 1e-6, full)
        check(full["resident_fraction"] == 1.0, full)
        check(rows["quest"]["resident_fraction"] == 1.0, rows["quest"])  # Quest evicts nothing
        for name in ("arkvale", "streaming_llm", "arkv"):
            check(rows[name]["resident_fraction"] < 0.9, rows[name])
            check(rows[name]["budget_tokens"] == 128, rows[name])
        # Per layer (stories260K: 5): the full cache and Quest hold every
        # layer's context, ArkVale its two dense first layers; pools alone
        # average to the whole row's fraction.
        for name, r in rows.items():
            check(len(r["resident_fraction_by_layer"]) == 5, r)
        for name in ("full", "quest"):
            check(rows[name]["resident_fraction_by_layer"] == [1.0] * 5, rows[name])
        ark = rows["arkvale"]["resident_fraction_by_layer"]
        check(ark[:2] == [1.0, 1.0] and max(ark[2:]) < 0.5, ark)
        for name in ("full", "quest", "arkvale", "streaming_llm"):
            by_layer = rows[name]["resident_fraction_by_layer"]
            check(abs(sum(by_layer) / 5 - rows[name]["resident_fraction"]) < 1e-3, rows[name])
        # Digests count where a policy scores pages by them: Quest and
        # ArkVale beyond their two dense layers (3 of 5), two fp32 vectors
        # per full page and KV head, so 1/16 of those layers' fp32 KV.
        tokens = [c["prompt_tokens"] + c["answer_tokens"] for c in cases]
        for name in ("quest", "arkvale"):
            df = rows[name]["digest_fraction"]
            check(0.6 / 16 * (1 - 16 / min(tokens)) < df <= 0.6 / 16 + 1e-4, rows[name])
        for name in ("full", "streaming_llm", "arkv"):
            check(rows[name]["digest_fraction"] == 0.0, rows[name])
        # fp16 digests: half the bytes, the same cases.
        _, half = run_eval(
            NEEDLES + ["--needle_contexts", "512", "--cases", "3", "--depths", "0,0.5,1",
                       "--policies", "quest", "--budgets", "4", "--digest_type", "f16"],
            os.path.join(tmp, "half.json"))
        check(half["digest_type"] == "f16" and rep["digest_type"] == "f32", half)
        quest16 = half["results"][0]
        check(abs(quest16["digest_fraction"] - rows["quest"]["digest_fraction"] / 2) < 1e-4,
              (quest16, rows["quest"]))
        check(quest16["resident_fraction"] == 1.0, quest16)
        # ARKV's quantized tier counts in the layers that held it.
        arkv = rows["arkv"]
        check(sum(arkv["resident_fraction_by_layer"]) / 5 >= arkv["resident_fraction"] - 1e-3,
              arkv)
        for r in rows.values():
            check(r["cases"] == 3 and len(r["outcomes"]) == 3, r)
            check(r["outcomes"].count("1") == r["correct"], r)
            check(abs(r["accuracy"] - r["correct"] / 3) < 1e-4, r)
            lo, hi = wilson(r["correct"], 3)
            check(abs(r["ci95"][0] - lo) < 1e-4 and abs(r["ci95"][1] - hi) < 1e-4, r)
            check(sum(n for _, n in r["by_task"].values()) == 3, r)
            check(r["by_task"]["kv"][1] == 1 and r["by_task"]["passkey"][1] == 2, r)
        # The report script printed the table.
        check("resident" in run.stdout and "arkvale" in run.stdout, run.stdout)

        for flags, message in ((["--depths", "0,2"], "bad depth"),
                               (["--tasks", "haystack"], "unknown task"),
                               (["--key_formats", "hex"], "unknown key format"),
                               (["--needle_contexts", "32"], "outside [64"),
                               (["--needle_contexts", "512", "--page_size", "0"],
                                "page_size below 1"),
                               (["--needle_contexts", "512", "--digest_type", "f8"],
                                "unknown digest type 'f8'"),
                               (["--needle_contexts", "512", "--policies", "full,lru\"x"],
                                'unknown policy "lru\\"x"')):
            expect_refused(NEEDLES + flags + ["--json", os.path.join(tmp, "bad.json")], message)
            check(not os.path.exists(os.path.join(tmp, "bad.json")), flags)
    print("kvtier-eval needles: ok")


def needle_allocators():
    with tempfile.TemporaryDirectory() as tmp:
        before = set(glob.glob("/tmp/kvtier-needles.*"))
        run, rep = run_eval(
            NEEDLES + ["--needle_contexts", "512", "--cases", "2", "--policies",
                       "full,h2o,arkv,quest", "--budgets", "12", "--needle_allocators",
                       "uniform,xkv,lukv"], os.path.join(tmp, "alloc.json"))
        got = sorted((r["policy"], r["allocator"]) for r in rep["results"])
        # Quest and the full cache keep every page: uniform only.
        check(got == [("arkv", "lukv"), ("arkv", "uniform"), ("arkv", "xkv"), ("full", "uniform"),
                      ("h2o", "lukv"), ("h2o", "uniform"), ("h2o", "xkv"), ("quest", "uniform")],
              got)
        for r in rep["results"]:
            check("error" not in r and r["cases"] == 2, r)
            if r["policy"] in ("h2o", "arkv"):
                check(r["resident_fraction"] < 0.9, r)
            layers = r["layer_budget_tokens"]
            if r["allocator"] == "uniform":
                check(layers == [], r)
                continue
            # stories260K: 5 layers sharing 5 x 3 pages (42 tokens a layer
            # rounded up); every layer keeps enough for its policy: H2O 2
            # pages, ARKV 3 (a cache beyond its 32-token window), which XKV
            # would otherwise go below.
            check(len(layers) == 5 and all(t % 16 == 0 for t in layers), layers)
            check(5 * 48 <= sum(layers) <= 5 * 48 + 5 * 16, layers)
            check(min(layers) >= (48 if r["policy"] == "arkv" else 32), (r["policy"], layers))
            if r["policy"] == "h2o":
                check(len(set(layers)) > 1, layers)  # the allocator did allocate
        check("needles 512 h2o 1/12 layer_tokens lukv:" in run.stderr, run.stderr[-2000:])
        check("trace: " in run.stderr, run.stderr[-2000:])  # the calibration case ran
        check(set(glob.glob("/tmp/kvtier-needles.*")) == before, "calibration files left")
        expect_refused(NEEDLES + ["--needle_contexts", "512", "--needle_allocators", "pyramid"],
                       'unknown allocator "pyramid"')
    print("kvtier-eval needles with allocators: ok")


def needles_at_equal_memory():
    with tempfile.TemporaryDirectory() as tmp:
        run, rep = run_eval(
            NEEDLES + ["--needle_contexts", "512", "--cases", "2", "--policies",
                       "full,quest,arkvale,h2o,arkv", "--budgets", "4", "--budget_unit",
                       "memory"], os.path.join(tmp, "memory.json"))
        check(rep["budget_unit"] == "memory", rep.keys())
        rows = {r["policy"]: r for r in rep["results"]}
        check(sorted(rows) == ["arkv", "arkvale", "full", "h2o", "quest"], rows.keys())
        check(rows["full"]["resident_fraction"] == 1.0, rows["full"])
        # stories260K: 5 layers of 32 pages; a quarter is 8 pages a layer.
        # Every policy holds at most that in every layer (ArkVale and Quest
        # without dense layers, Quest paging out, ARKV's quantized tier
        # included); the full cache of a case holds its own pages.
        pages = [math.ceil((c["prompt_tokens"] + c["answer_tokens"] - 1) / 16)
                 for c in rep["cases"]]
        bound = sum(8 / p for p in pages) / len(pages)
        for name in ("h2o", "arkv", "arkvale", "quest"):
            r = rows[name]
            check("error" not in r and r["cases"] == 2, r)
            check(0.2 < r["resident_fraction"] <= bound + 1e-4, (bound, r))
            check(max(r["resident_fraction_by_layer"]) <= bound + 1e-4, (bound, r))
        check("needles 512 arkv 1/4 memory uniform:" in run.stderr, run.stderr[-2000:])
        # With an allocator every ARKV layer keeps room for its window once
        # both tiers' pages are paid for: 4 pages (64 tokens), not 3.
        run, rep = run_eval(
            NEEDLES + ["--needle_contexts", "512", "--cases", "1", "--policies", "arkv",
                       "--budgets", "8", "--budget_unit", "memory", "--needle_allocators",
                       "xkv"], os.path.join(tmp, "memory_xkv.json"))
        (row,) = rep["results"]
        check("error" not in row and row["allocator"] == "xkv", row)
        check(len(row["layer_budget_tokens"]) == 5 and min(row["layer_budget_tokens"]) >= 64, row)
        check("within 1/N of the full cache's" in run.stdout, run.stdout)
        # LU-KV's per-layer budgets, rounded up to pages, would add up to
        # more than a quarter of the memory (42 pages of 40): the largest
        # give pages back, and the JSON lists what the worker applied.
        run, rep = run_eval(
            NEEDLES + ["--needle_contexts", "512", "--cases", "1", "--policies", "h2o",
                       "--budgets", "4", "--budget_unit", "memory", "--needle_allocators",
                       "lukv"], os.path.join(tmp, "memory_lukv.json"))
        (row,) = rep["results"]
        layers = row["layer_budget_tokens"]
        check("error" not in row and len(layers) == 5 and len(set(layers)) > 1, row)
        check(sum(layers) == 5 * 128 and row["resident_fraction"] <= 0.25 + 1e-4, row)
        expect_refused(NEEDLES + ["--needle_contexts", "512", "--budget_unit", "bytes"],
                       "unknown budget unit 'bytes'")
    print("kvtier-eval needles at equal memory: ok")


def continuation():
    with tempfile.TemporaryDirectory() as tmp:
        run, rep = run_eval(
            ["continuation"] + MODEL_FLAGS +
            ["--continuation_context", "512", "--lengths", "8,32,128", "--prompts", "2",
             "--policies", "full,arkvale,quest", "--budgets", "4"],
            os.path.join(tmp, "continuation.json"))
        check(rep["lengths"] == [8, 32, 128] and len(rep["prompts"]) == 2, rep["prompts"])
        check([p["task"] for p in rep["prompts"]] == ["passkey", "kv"], rep["prompts"])
        for p in rep["prompts"]:
            check(p["prompt_tokens"] + 128 <= 512 and p["prompt_tokens"] > 256, p)
        rows = {r["policy"]: r for r in rep["results"]}
        check(sorted(rows) == ["arkvale", "full", "quest"], rows.keys())
        full = rows["full"]
        check(full["agreement"] == [1.0, 1.0, 1.0], full)
        check(all(k < 1e-6 for k in full["mean_kl"]), full)
        check(full["identical_prefix"] == 128.0, full)
        check(full["repetition"] == full["reference_repetition"], full)
        for r in rows.values():
            check(len(r["agreement"]) == 3 and all(0 <= a <= 1 for a in r["agreement"]), r)
            check(0 <= r["identical_prefix"] <= 128 and 0 <= r["repetition"] <= 1, r)
            check(r["budget_tokens"] == (0 if r["policy"] == "full" else 128), r)
        check("agree@128" in run.stdout, run.stdout)
        check(rep["budget_unit"] == "layer_tokens", rep.keys())
        # At equal memory every policy runs; quest_per_head, whose lists
        # could exceed the budget together, is refused.
        run, rep = run_eval(
            ["continuation"] + MODEL_FLAGS +
            ["--continuation_context", "512", "--lengths", "8,32", "--prompts", "1",
             "--policies", "full,quest,quest_per_head,h2o", "--budgets", "4", "--budget_unit",
             "memory"],
            os.path.join(tmp, "memory.json"))
        check(rep["budget_unit"] == "memory", rep.keys())
        rows = {r["policy"]: r for r in rep["results"]}
        check("cannot offload" in rows["quest_per_head"].get("error", ""), rows["quest_per_head"])
        for name in ("quest", "h2o"):
            check("error" not in rows[name] and rows[name]["budget_tokens"] == 128, rows[name])
        check("within 1/N of the full cache's" in run.stdout, run.stdout)
        for flags, message in ((["--lengths", "8,0"], "bad number"),
                               (["--lengths", "512"], "must hold the longest")):
            expect_refused(["continuation"] + MODEL_FLAGS + flags +
                           ["--continuation_context", "512"], message)
    print("kvtier-eval continuation: ok")


def digests():
    with tempfile.TemporaryDirectory() as tmp:
        run, rep = run_eval(
            ["digests"] + MODEL_FLAGS +
            ["--needle_contexts", "512", "--cases", "2", "--digest_page_sizes", "16,32",
             "--budgets", "4,8"], os.path.join(tmp, "digests.json"))
        check("digests 512: case 2/2" in run.stderr, run.stderr[-2000:])
        check(len(rep["contexts"]) == 1, rep["contexts"])
        ctx = rep["contexts"][0]
        check(ctx["context"] == 512 and ctx["cases"] == 2, ctx)
        # Each case: the last prompt query and every answer step, every layer.
        check(ctx["queries"] >= 2 * rep["model"]["layers"] * 2, ctx)
        rows = ctx["rows"]
        check(len(rows) == 2 * 4 * 3 * 3, len(rows))  # 3 digests and the exact ranking
        cells = {(r["page_size"], r["digest"], r["selection"], r["k"]): r for r in rows}
        check(len(cells) == len(rows), "duplicate rows")
        for (page, digest, selection, k), r in cells.items():
            check(0 <= r["recall"] <= 1 and 0 <= r["mass"] <= 1, r)
            check(r["samples"] == ctx["queries"], r)  # 512 tokens leave > k pages
            if k == "1/8":
                wider = cells[(page, digest, selection, "1/4")]
                check(wider["mass"] >= r["mass"] - 1e-4, (wider, r))
            if digest != "exact":  # no ranking holds more mass than the exact one
                best = cells[(page, "exact", selection, k)]
                check(best["mass"] >= r["mass"] - 1e-4, (best, r))
        check("recall@1/8" in run.stdout and "q_head" in run.stdout, run.stdout)
        expect_refused(["digests"] + MODEL_FLAGS +
                       ["--needle_contexts", "512", "--digest_page_sizes", "16,0"], "bad number")
    print("kvtier-eval digests: ok")


def prefix():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "prefix.json")
        # An in-process store; a 448-token document is 28 pages of 16.
        run, rep = run_eval(["prefix"] + MODEL_FLAGS + ["--target", "", "--prefix_lengths", "448"],
                            out)
        check(rep["store"] == "in-process" and rep["policy"] == "arkvale", rep)
        check(len(rep["results"]) == 1, rep["results"])
        r = rep["results"][0]
        check(r["prefix_tokens"] == 448 and r["document_tokens"] == 448, r)
        check(r["decided"] and r["fallbacks"] == 0, r)
        if r["load"]:  # the estimate's choice rests on measured speeds
            check(r["reused_tokens"] == 448 and r["pages_loaded"] == 28 * 5, r)
            check(r["bytes_loaded"] == r["pages_loaded"] * 16 * 4 * 8 * 2 * 4, r)
        else:
            check(r["reused_tokens"] == 0 and r["pages_loaded"] == 0, r)
        # Both requests hand their prompt to the cache after the first token.
        check(r["handoff_recompute_s"] >= 0 and r["handoff_reuse_s"] >= 0, r)
        check("handing the prompt to the cache" in run.stderr, run.stderr[-2000:])
        check("hand-off s" in run.stdout, run.stdout)
    print("kvtier-eval prefix: ok")


def longrun():
    """The main job's run, in-process: each document names its secret, both
    runs and the second question print; an unknown document is refused."""
    for document, secret in (("workshop", "secret code"), ("landmark", "passkey 31415")):
        run = subprocess.run([BIN, "longrun"] + MODEL_FLAGS +
                             ["--target", "", "--document", document, "--prompt_tokens", "400",
                              "--steps", "8", "--budget_fraction", "2", "--answer_steps", "2"],
                             capture_output=True, text=True, timeout=600)
        check(run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}")
        check(f"({document}" in run.stderr or document == "landmark", run.stderr[-2000:])
        check(secret in run.stderr, run.stderr[-2000:])
        check("budgeted (arkvale):" in run.stdout and "full cache:" in run.stdout, run.stdout)
        check("second question, with reuse:" in run.stdout, run.stdout)
        check("greedy agreement with the full cache" in run.stderr, run.stderr[-2000:])
    expect_refused(["longrun"] + MODEL_FLAGS + ["--target", "", "--document", "poems"],
                   "poems")
    print("kvtier-eval longrun: ok")


if __name__ == "__main__":
    needles()
    needle_allocators()
    needles_at_equal_memory()
    continuation()
    digests()
    prefix()
    longrun()
