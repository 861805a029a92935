"""KvtierConnector driven through vLLM's call sequence against a real kvtier-server.

Each Engine is what one vLLM process holds: a scheduler-side and a
worker-side connector and paged numpy KV caches ([2, blocks, block_size,
heads, head_dim] per layer) filled with garbage. A second Engine stands for
a second process: new objects, nothing shared but the store.
"""
import hashlib
import os
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest

import kvtier
from conftest import Server
from kvtier.vllm import KVConnectorRole, KvtierConnector, KvtierConnectorMetadata

BLOCK = 4
HEADS = 2
HEAD_DIM = 8
NUM_BLOCKS = 32
NAMES = [f"model.layers.{i}.self_attn.attn" for i in (0, 1, 2, 10)]  # "10" sorts last
LAYERS = len(NAMES)


def vllm_config(target, tp_size=1, rank=0, cache_dtype="auto", **extra):
    model = SimpleNamespace(
        model="test/model-7b", dtype="float16", use_mla=False,
        get_num_layers=lambda parallel: LAYERS, get_num_kv_heads=lambda parallel: HEADS,
        get_head_size=lambda: HEAD_DIM)
    return SimpleNamespace(
        model_config=model,
        cache_config=SimpleNamespace(block_size=BLOCK, cache_dtype=cache_dtype),
        parallel_config=SimpleNamespace(tensor_parallel_size=tp_size, pipeline_parallel_size=1,
                                        rank=rank),
        kv_transfer_config=SimpleNamespace(
            kv_connector_extra_config={"target": target, "max_attempts": 1, **extra}))


def request(req_id, tokens, salt=None):
    return SimpleNamespace(request_id=req_id, prompt_token_ids=list(tokens), cache_salt=salt)


class Blocks:
    """vLLM's KVCacheBlocks: one group, the attention group."""

    def __init__(self, block_ids):
        self.block_ids = block_ids

    def get_block_ids(self):
        return (list(self.block_ids),)


def no_cached_reqs():
    return SimpleNamespace(req_ids=[], resumed_from_preemption=[], new_block_ids=[],
                           num_computed_tokens=[])


def token_kv(layer, prefix):
    """The K and V a model would compute for the last token of `prefix` in `layer`."""
    rng = np.random.default_rng([layer, *prefix])
    return rng.standard_normal((2, HEADS, HEAD_DIM)).astype(np.float16)


class Engine:
    """One vLLM process: connectors of both roles (one worker per TP rank) and its caches."""

    def __init__(self, target, seed, tp_size=1, **extra):
        self.scheduler = KvtierConnector(vllm_config(target, tp_size, **extra),
                                         KVConnectorRole.SCHEDULER)
        rng = np.random.default_rng(seed)
        self.workers, self.rank_caches = [], []
        for rank in range(tp_size):
            worker = KvtierConnector(vllm_config(target, tp_size, rank, **extra),
                                     KVConnectorRole.WORKER)
            caches = {name: rng.standard_normal((2, NUM_BLOCKS, BLOCK, HEADS, HEAD_DIM))
                      .astype(np.float16) for name in reversed(NAMES)}
            worker.register_kv_caches(caches)
            self.workers.append(worker)
            self.rank_caches.append(caches)
        self.worker, self.caches = self.workers[0], self.rank_caches[0]
        self.free = [int(b) for b in rng.permutation(NUM_BLOCKS)]

    def schedule(self, req, num_computed=0, num_scheduled=None):
        """A scheduler step for a new request: -> (matched, its block ids, metadata)."""
        matched, load_async = self.scheduler.get_num_new_matched_tokens(req, num_computed)
        assert load_async is False
        if num_scheduled is None:
            num_scheduled = len(req.prompt_token_ids) - num_computed - matched
        block_ids = self.allocate(num_computed + matched + num_scheduled)
        self.scheduler.update_state_after_alloc(req, Blocks(block_ids), matched)
        new = SimpleNamespace(req_id=req.request_id, prompt_token_ids=req.prompt_token_ids,
                              block_ids=(block_ids,), num_computed_tokens=num_computed + matched)
        meta = self.scheduler.build_connector_meta(SimpleNamespace(
            scheduled_new_reqs=[new], scheduled_cached_reqs=no_cached_reqs(),
            num_scheduled_tokens={req.request_id: num_scheduled}))
        assert isinstance(meta, KvtierConnectorMetadata)
        return matched, block_ids, meta

    def allocate(self, num_tokens):
        return [self.free.pop() for _ in range(-(-num_tokens // BLOCK))]

    def run(self, meta, *batch, ranks=None):
        """A forward pass of (request, block ids, begin, end) items, each computing tokens
        [begin, end): -> the load errors (one set per rank when there are several)."""
        errors = []
        for rank in ranks if ranks is not None else range(len(self.workers)):
            worker, caches = self.workers[rank], self.rank_caches[rank]
            worker.bind_connector_metadata(meta)
            worker.start_load_kv(SimpleNamespace())
            for layer, name in enumerate(NAMES):
                worker.wait_for_layer_load(name)
                for req, block_ids, begin, end in batch:
                    for pos in range(begin, end):
                        kv = token_kv(layer * 100 + rank, req.prompt_token_ids[:pos + 1])
                        caches[name][:, block_ids[pos // BLOCK], pos % BLOCK] = kv
                worker.save_kv_layer(name, caches[name], None)
            worker.wait_for_save()
            errors.append(worker.get_block_ids_with_load_errors())
            worker.clear_connector_metadata()
        return errors[0] if len(errors) == 1 else errors

    def prefill(self, req):
        """A whole prompt in one step, then finished: -> (matched, block ids, meta, errors)."""
        matched, block_ids, meta = self.schedule(req)
        errors = self.run(meta, (req, block_ids, matched, len(req.prompt_token_ids)))
        assert self.scheduler.request_finished(req, block_ids) == (False, None)
        return matched, block_ids, meta, errors


def block_bytes(engine, name, block_id):
    return engine.caches[name][:, block_id].tobytes()


def test_second_engine_loads_the_shared_prefix_byte_for_byte(server):
    prompt = list(range(1000, 1018))  # 4 full blocks and 2 tokens
    first = Engine(server.target, seed=1)
    matched, ids1, meta, errors = first.prefill(request("a", prompt))
    assert (matched, meta.loads, errors) == (0, [], set())
    assert [page.block_id for page in meta.saves] == ids1[:4]
    assert first.worker.counters.saved_pages == 4 * LAYERS

    second = Engine(server.target, seed=2)
    before = {name: cache.copy() for name, cache in second.caches.items()}
    matched, ids2, meta, errors = second.prefill(request("b", prompt[:16] + [7] * 6))
    assert matched == 16
    assert [page.block_id for page in meta.loads] == ids2[:4]
    assert errors == set()
    for name in NAMES:
        for i in range(4):
            assert block_bytes(second, name, ids2[i]) == block_bytes(first, name, ids1[i])
        untouched = [b for b in range(NUM_BLOCKS) if b not in ids2]
        assert second.caches[name][:, untouched].tobytes() == before[name][:, untouched].tobytes()
    counters = second.worker.counters
    assert (counters.loaded_pages, counters.load_failed_pages) == (4 * LAYERS, 0)
    assert counters.saved_pages == 1 * LAYERS  # block 4 (tokens 16-19) is new
    assert (second.scheduler.counters.lookups, second.scheduler.counters.lookup_errors) == (1, 0)


def test_partial_last_block_is_never_saved_or_matched(server):
    prompt = list(range(2000, 2010))  # 2 full blocks and 2 tokens
    first = Engine(server.target, seed=1)
    assert len(first.prefill(request("a", prompt))[2].saves) == 2
    second = Engine(server.target, seed=2)
    longer = request("b", prompt + [1] * 6)  # 4 full blocks could match; 2 are stored
    assert second.scheduler.get_num_new_matched_tokens(longer, 0) == (8, False)


def test_whole_block_prompt_matches_one_block_fewer(server):
    prompt = list(range(3000, 3012))  # exactly 3 blocks, all computed and saved
    first = Engine(server.target, seed=1)
    assert len(first.prefill(request("a", prompt))[2].saves) == 3
    second = Engine(server.target, seed=2)
    assert second.scheduler.get_num_new_matched_tokens(request("b", prompt), 0) == (8, False)
    longer = request("c", prompt + [5])
    assert second.scheduler.get_num_new_matched_tokens(longer, 0) == (12, False)


def test_locally_computed_tokens_are_neither_counted_nor_loaded(server):
    prompt = list(range(4000, 4018))
    Engine(server.target, seed=1).prefill(request("a", prompt))
    second = Engine(server.target, seed=2)
    matched, block_ids, meta = second.schedule(request("b", prompt), num_computed=8)
    assert matched == 8
    assert [page.block_id for page in meta.loads] == block_ids[2:4]
    assert [page.block_id for page in meta.saves] == []  # block 4 is partial
    req = request("c", prompt)
    assert second.scheduler.get_num_new_matched_tokens(req, 16) == (0, False)
    assert second.scheduler.counters.lookups == 1  # nothing left to ask the store


def test_chunked_prefill_saves_the_blocks_each_chunk_fills(server):
    prompt = list(range(5000, 5018))
    req = request("a", prompt)
    first = Engine(server.target, seed=1)
    matched, block_ids, meta = first.schedule(req, num_scheduled=6)
    assert (matched, len(block_ids)) == (0, 2)
    assert [page.block_id for page in meta.saves] == block_ids[:1]  # tokens 0-5: block 0
    first.run(meta, (req, block_ids, 0, 6))
    more = first.allocate(18 - 8)
    block_ids += more
    meta = first.scheduler.build_connector_meta(SimpleNamespace(
        scheduled_new_reqs=[],
        scheduled_cached_reqs=SimpleNamespace(req_ids=["a"], resumed_from_preemption=[False],
                                              new_block_ids=[(more,)], num_computed_tokens=[6]),
        num_scheduled_tokens={"a": 12}))
    assert [page.block_id for page in meta.saves] == block_ids[1:4]  # block 1 finished now
    first.run(meta, (req, block_ids, 6, 18))
    first.scheduler.request_finished(req, block_ids)

    second = Engine(server.target, seed=2)
    matched, ids2, _meta, errors = second.prefill(request("b", prompt + [9]))
    assert (matched, errors) == (16, set())
    for name in NAMES:
        for i in range(4):
            assert block_bytes(second, name, ids2[i]) == block_bytes(first, name, block_ids[i])


def test_resumed_request_saves_into_its_new_block_table(server):
    engine = Engine(server.target, seed=1)
    req = request("a", list(range(5200, 5218)))
    _matched, block_ids, meta = engine.schedule(req, num_scheduled=6)
    assert [page.block_id for page in meta.saves] == block_ids[:1]
    table = [30, 31, 29, 28, 27]  # preempted, then resumed with a whole new table
    meta = engine.scheduler.build_connector_meta(SimpleNamespace(
        scheduled_new_reqs=[],
        scheduled_cached_reqs=SimpleNamespace(req_ids=["a"], resumed_from_preemption=[True],
                                              new_block_ids=[(table,)], num_computed_tokens=[0]),
        num_scheduled_tokens={"a": 18}))
    assert meta.saves[0].page_hash == engine.scheduler._requests["a"].chain[0]
    assert [page.block_id for page in meta.saves] == table[:4]


def test_requests_sharing_blocks_in_one_step_store_each_page_once(server):
    prompt = list(range(5300, 5318))
    Engine(server.target, seed=1).prefill(request("a", prompt[:12] + [1] * 6))  # blocks 0-2
    second = Engine(server.target, seed=2)
    reqs = [request("b", prompt), request("c", prompt[:12]), request("d", prompt[:16] + [3] * 2)]
    batch, new_reqs = [], []
    for req in reqs:
        matched, _ = second.scheduler.get_num_new_matched_tokens(req, 0)
        block_ids = second.allocate(len(req.prompt_token_ids))
        second.scheduler.update_state_after_alloc(req, Blocks(block_ids), matched)
        new_reqs.append(SimpleNamespace(req_id=req.request_id, block_ids=(block_ids,),
                                        prompt_token_ids=req.prompt_token_ids,
                                        num_computed_tokens=matched))
        batch.append((req, block_ids, matched, len(req.prompt_token_ids)))
    assert [begin for _req, _ids, begin, _end in batch] == [12, 8, 12]
    meta = second.scheduler.build_connector_meta(SimpleNamespace(
        scheduled_new_reqs=new_reqs, scheduled_cached_reqs=no_cached_reqs(),
        num_scheduled_tokens={"b": 6, "c": 4, "d": 6}))
    (_, ids_b, _, _), (_, ids_c, _, _), (_, ids_d, _, _) = batch
    assert [page.block_id for page in meta.loads] == ids_b[:3] + ids_c[:2] + ids_d[:3]
    # c computes block 2, which b loads; d computes block 3, which b computes.
    assert [page.block_id for page in meta.saves] == ids_b[3:4]
    admin = kvtier.StoreClient(server.target)
    hits_before = admin.stats()["ram"]["hits"]
    assert second.run(meta, *batch) == set()
    assert admin.stats()["ram"]["hits"] - hits_before == 3 * LAYERS  # each page read once
    counters = second.worker.counters
    assert (counters.loaded_pages, counters.saved_pages, counters.already_present_pages,
            counters.save_failed_pages) == (8 * LAYERS, 1 * LAYERS, 0, 0)


def test_cache_salt_separates_prefixes(server):
    prompt = list(range(5500, 5518))
    Engine(server.target, seed=1).prefill(request("a", prompt, salt="alice"))
    second = Engine(server.target, seed=2)
    assert second.scheduler.get_num_new_matched_tokens(request("b", prompt), 0) == (0, False)
    assert second.scheduler.get_num_new_matched_tokens(
        request("c", prompt, salt="bob"), 0) == (0, False)
    assert second.scheduler.get_num_new_matched_tokens(
        request("d", prompt, salt="alice"), 0) == (16, False)


def test_unreachable_store_matches_nothing_and_is_counted():
    down = Server()
    target = down.target
    down.stop()
    engine = Engine(target, seed=3)
    matched, _ids, meta, errors = engine.prefill(request("a", list(range(6000, 6018))))
    assert (matched, errors, len(meta.saves)) == (0, set(), 4)
    assert (engine.scheduler.counters.lookups, engine.scheduler.counters.lookup_errors) == (0, 1)
    assert (engine.worker.counters.saved_pages,
            engine.worker.counters.save_failed_pages) == (0, 4 * LAYERS)


def test_store_lost_after_lookup_fails_every_load(fresh_server):
    prompt = list(range(6500, 6518))
    Engine(fresh_server.target, seed=1).prefill(request("a", prompt))
    second = Engine(fresh_server.target, seed=2)
    before = {name: cache.copy() for name, cache in second.caches.items()}
    req = request("b", prompt)
    matched, block_ids, meta = second.schedule(req)
    assert matched == 16
    fresh_server.proc.kill()
    fresh_server.proc.wait()
    assert second.run(meta, (req, block_ids, 16, 18)) == set(block_ids[:4])
    for name in NAMES:
        assert second.caches[name][:, block_ids[:4]].tobytes() == \
            before[name][:, block_ids[:4]].tobytes()
    assert (second.worker.counters.loaded_pages,
            second.worker.counters.load_failed_pages) == (0, 4 * LAYERS)


def test_page_deleted_between_lookup_and_load_is_reported(server):
    prompt = list(range(7000, 7018))
    first = Engine(server.target, seed=1)
    _matched, ids1, _meta, _errors = first.prefill(request("a", prompt))
    second = Engine(server.target, seed=2)
    before = {name: cache.copy() for name, cache in second.caches.items()}
    req = request("b", prompt)
    matched, block_ids, meta = second.schedule(req)
    assert matched == 16
    deleted_layer = 3  # "layers.10": last in natural order, not in string order
    client = kvtier.StoreClient(server.target)
    assert client.delete([(meta.loads[2].page_hash, deleted_layer)]) == 1

    assert second.run(meta, (req, block_ids, 16, 18)) == {block_ids[2]}
    assert second.worker.get_block_ids_with_load_errors() == set()  # reported once
    assert (second.worker.counters.loaded_pages,
            second.worker.counters.load_failed_pages) == (4 * LAYERS - 1, 1)
    for layer, name in enumerate(NAMES):
        expected = before if layer == deleted_layer else first.caches
        expected_block = block_ids[2] if layer == deleted_layer else ids1[2]
        assert block_bytes(second, name, block_ids[2]) == \
            expected[name][:, expected_block].tobytes()


def test_tensor_parallel_prefix_needs_every_rank(server):
    prompt = list(range(8000, 8018))
    req = request("a", prompt)
    first = Engine(server.target, seed=1, tp_size=2)
    matched, block_ids, meta = first.schedule(req)
    assert matched == 0
    first.run(meta, (req, block_ids, 0, len(prompt)), ranks=[0])
    probe = Engine(server.target, seed=2, tp_size=2).scheduler
    assert probe.get_num_new_matched_tokens(request("b", prompt), 0) == (0, False)
    first.run(meta, (req, block_ids, 0, len(prompt)), ranks=[1])
    assert probe.get_num_new_matched_tokens(request("c", prompt), 0) == (16, False)
    single = Engine(server.target, seed=3).scheduler  # tp=1 keys are other keys
    assert single.get_num_new_matched_tokens(request("d", prompt), 0) == (0, False)

    second = Engine(server.target, seed=4, tp_size=2)
    req2 = request("e", prompt)
    matched, ids2, meta2 = second.schedule(req2)
    assert second.run(meta2, (req2, ids2, 16, 18)) == [set(), set()]
    for rank in range(2):
        for name in NAMES:
            for i in range(4):
                assert second.rank_caches[rank][name][:, ids2[i]].tobytes() == \
                    first.rank_caches[rank][name][:, block_ids[i]].tobytes()


@pytest.fixture(scope="module")
def tenant_server():
    tmp = tempfile.TemporaryDirectory()
    access = os.path.join(tmp.name, "access.txt")
    with open(access, "w") as f:
        for tenant, token in (("acme", "a" * 32), ("globex", "b" * 32)):
            digest = hashlib.sha256(token.encode()).hexdigest()
            f.write(f"tenant={tenant} role=tenant token_sha256={digest}\n")
    server = Server("--access_file", access)
    yield server
    server.stop()
    tmp.cleanup()


def test_tenants_do_not_see_each_others_prefixes(tenant_server):
    prompt = list(range(9000, 9018))
    acme = Engine(tenant_server.target, seed=1, token="a" * 32)
    acme.prefill(request("a", prompt))
    assert acme.worker.counters.saved_pages == 4 * LAYERS
    globex = Engine(tenant_server.target, seed=2, token="b" * 32).scheduler
    assert globex.get_num_new_matched_tokens(request("b", prompt), 0) == (0, False)
    assert (globex.counters.lookups, globex.counters.lookup_errors) == (1, 0)
    acme_again = Engine(tenant_server.target, seed=3, token="a" * 32).scheduler
    assert acme_again.get_num_new_matched_tokens(request("c", prompt), 0) == (16, False)


def test_configuration_errors_raise_value_error(server):
    with pytest.raises(ValueError, match="target"):
        KvtierConnector(vllm_config(""), KVConnectorRole.SCHEDULER)
    with pytest.raises(ValueError, match=r"unknown .*\['tokn'\]"):
        KvtierConnector(vllm_config(server.target, tokn="x"), KVConnectorRole.SCHEDULER)
    with pytest.raises(ValueError, match="deadline_ms must be a int"):
        KvtierConnector(vllm_config(server.target, deadline_ms="5"), KVConnectorRole.WORKER)
    with pytest.raises(ValueError, match="'fp8' is not supported"):
        KvtierConnector(vllm_config(server.target, cache_dtype="fp8"), KVConnectorRole.WORKER)
    worker = KvtierConnector(vllm_config(server.target), KVConnectorRole.WORKER)
    good = (2, NUM_BLOCKS, BLOCK, HEADS, HEAD_DIM)
    with pytest.raises(ValueError, match="3 KV caches, but the model has 4 layers"):
        worker.register_kv_caches({name: np.zeros(good, np.float16) for name in NAMES[:3]})
    with pytest.raises(ValueError, match=r"shape \(2, 32, 4, 8, 2\)"):
        worker.register_kv_caches({name: np.zeros((2, NUM_BLOCKS, BLOCK, HEAD_DIM, HEADS),
                                                  np.float16) for name in NAMES})
    with pytest.raises(ValueError, match="4-byte elements, but the cache dtype is f16"):
        worker.register_kv_caches({name: np.zeros(good, np.float32) for name in NAMES})
    with pytest.raises(ValueError, match="C-contiguous"):
        worker.register_kv_caches({name: np.zeros((2, NUM_BLOCKS * 2, BLOCK, HEADS, HEAD_DIM),
                                                  np.float16)[:, ::2] for name in NAMES})
    assert KvtierConnector.get_required_kvcache_layout(None) == "NHD"


def test_long_prompt_is_looked_up_in_chunks_with_the_documented_keys(server):
    prompt = list(range(100_000, 100_000 + 4100 * BLOCK))  # 4100 blocks: two lookups
    layout = kvtier.PageLayout(BLOCK, HEADS, HEAD_DIM, "f16")
    seed = kvtier.chain_seed(b"", b"vllm|test/model-7b|tp=1", layout)
    chain = kvtier.chain_hashes(seed, prompt, BLOCK)
    client = kvtier.StoreClient(server.target)

    def store(blocks):
        keys = [(chain[i], layer) for i in blocks for layer in range(LAYERS)]
        client.put_pages(keys, layout, np.zeros((len(keys), layout.page_bytes), np.uint8))

    store([0, 1, 4096, 4097])
    scheduler = Engine(server.target, seed=1).scheduler
    assert scheduler.get_num_new_matched_tokens(request("a", prompt), 0) == (2 * BLOCK, False)
    store(range(2, 4096))
    assert scheduler.get_num_new_matched_tokens(request("b", prompt), 0) == (4098 * BLOCK, False)
