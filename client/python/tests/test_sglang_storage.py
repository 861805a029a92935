"""KvtierStorage, SGLang's HiCacheStorage, against a real kvtier-server.

Pages are numpy arrays standing in for SGLang's flat host pages: one per
key, `layer_num` layers of one `layout` page each.
"""
import hashlib
from types import SimpleNamespace

import numpy as np
import pytest

import kvtier
from conftest import Server
from kvtier.sglang import HiCacheStorage, KvtierStorage

LAYOUT = {"page_size": 4, "n_kv_heads": 2, "head_dim": 8, "dtype": "f16"}
LAYER_NUM = 3
PAGE_BYTES = LAYER_NUM * 2 * 4 * 2 * 8 * 2
PAGE_ELEMENTS = PAGE_BYTES // 2


def storage(target, **options):
    options = {"layout": LAYOUT, "layer_num": LAYER_NUM, "max_attempts": 1, **options}
    return KvtierStorage(target=target, **options)


def page(seed):
    return np.random.default_rng(seed).standard_normal(PAGE_ELEMENTS).astype(np.float16)


def sglang_config(tp_rank=0, tp_size=2, is_mla_model=False, **extra):
    return SimpleNamespace(
        tp_rank=tp_rank, tp_size=tp_size, pp_rank=0, pp_size=1, attn_cp_rank=0,
        attn_cp_size=1, is_mla_model=is_mla_model, model_name="org/model-7b",
        extra_config={"backend_name": "kvtier", "module_path": "kvtier.sglang",
                      "class_name": "KvtierStorage", "layout": LAYOUT,
                      "layer_num": LAYER_NUM, **extra})


def test_set_then_get_round_trips_the_bytes(server):
    store = storage(server.target)
    assert isinstance(store, HiCacheStorage)
    assert store.page_bytes == PAGE_BYTES
    value = page(1)
    assert store.set("rt-a", value) is True
    target = np.zeros(PAGE_ELEMENTS, np.float16)
    assert store.get("rt-a", target) is target  # written in place, returned
    assert target.tobytes() == value.tobytes()
    fresh = store.get("rt-a")  # no target: a new uint8 page
    assert (fresh.dtype, fresh.shape, fresh.tobytes()) == (np.uint8, (PAGE_BYTES,),
                                                           value.tobytes())
    assert store.set("rt-a", page(2)) is True  # already stored: the first bytes stay
    assert store.get("rt-a").tobytes() == value.tobytes()
    assert store.set("rt-b", target_location=page(3)) is True
    assert store.get("rt-b").tobytes() == page(3).tobytes()
    assert store.get_stats() == {"hits": 4, "misses": 0, "lost": 0, "stored": 2,
                                 "already_stored": 1}


def test_every_layer_is_its_own_kvtier_page(server):
    store = storage(server.target)
    value = page(4)
    store.set("layers", value)
    client = kvtier.StoreClient(server.target)
    slice_bytes = PAGE_BYTES // LAYER_NUM
    for layer in range(LAYER_NUM):
        [(status, _tier, data)] = client.batch_get([(store.page_hash("layers"), layer)])
        assert (status, data) == ("ok", value.tobytes()[layer * slice_bytes:
                                                        (layer + 1) * slice_bytes])
    assert client.delete([(store.page_hash("layers"), 1)]) == 1
    assert store.exists("layers") is False  # one slice gone: the page is gone
    assert store.get("layers") is None


def test_batch_round_trip_with_misses(server):
    store = storage(server.target)
    values = [page(10 + i) for i in range(3)]
    assert store.batch_set(["b0", "b1", "b2"], values) is True
    targets = [np.zeros(PAGE_ELEMENTS, np.float16) for _ in range(4)]
    got = store.batch_get(["b0", "missing", "b2", "b1"], targets)
    assert got[0] is targets[0] and got[2] is targets[2] and got[3] is targets[3]
    assert got[1] is None
    assert [g.tobytes() for g in (got[0], got[3], got[2])] == [v.tobytes() for v in values]
    assert store.batch_get([]) == []
    assert store.batch_set([], []) is True
    # A key twice in one batch is stored once, with its first value.
    assert store.batch_set(["dup", "dup"], [page(20), page(21)]) is True
    assert store.get("dup").tobytes() == page(20).tobytes()
    assert store.get_stats() == {"hits": 4, "misses": 1, "lost": 0, "stored": 4,
                                 "already_stored": 0}


def test_batch_exists_counts_the_prefix_before_a_gap(server):
    store = storage(server.target)
    store.batch_set(["g0", "g1", "g3"], [page(30), page(31), page(33)])
    assert store.batch_exists(["g0", "g1", "g2", "g3"]) == 2
    assert (store.exists("g3"), store.exists("g2")) == (True, False)
    assert store.batch_exists(["g2", "g0"]) == 0
    assert store.batch_exists([]) == 0
    store.set("g2", page(32))
    assert store.batch_exists(["g0", "g1", "g2", "g3"]) == 4


def test_wrong_sizes_raise_and_store_nothing(server):
    store = storage(server.target)
    with pytest.raises(ValueError, match=f"values\\[0\\] is {PAGE_BYTES - 2} bytes, but a page "
                                         f"is {PAGE_BYTES}"):
        store.set("size", np.zeros(PAGE_ELEMENTS - 1, np.float16))
    assert store.exists("size") is False
    store.set("size", page(40))
    with pytest.raises(ValueError, match=r"target_locations\[0\] is 8 bytes"):
        store.get("size", np.zeros(4, np.float16))
    with pytest.raises(ValueError, match="target_sizes"):
        store.get("size", np.zeros(PAGE_ELEMENTS, np.float16), target_sizes=PAGE_BYTES - 1)
    assert store.get("size", target_sizes=PAGE_BYTES) is not None
    with pytest.raises(ValueError, match="read-only"):
        readonly = np.zeros(PAGE_ELEMENTS, np.float16)
        readonly.flags.writeable = False
        store.get("size", readonly)
    with pytest.raises(ValueError, match="not C-contiguous"):
        store.set("size2", np.zeros(PAGE_ELEMENTS * 2, np.float16)[::2])
    with pytest.raises(ValueError, match="2 keys but 1 values"):
        store.batch_set(["x", "y"], [page(1)])
    with pytest.raises(ValueError, match="without values"):
        store.set("x")
    # The same key written by a storage of another page size: not this storage's page.
    other = storage(server.target, layout={**LAYOUT, "head_dim": 4}, namespace="shared")
    other.set("k", np.zeros(other.page_bytes, np.uint8))
    with pytest.raises(ValueError, match="holds pages that are not 256 bytes"):
        storage(server.target, namespace="shared").get("k")


def test_get_of_a_missing_key_is_none_and_counted(server):
    store = storage(server.target)
    target = np.full(PAGE_ELEMENTS, 7, np.float16)
    assert store.get("never-set", target) is None
    assert store.get("never-set") is None
    assert (target == 7).all()
    assert store.get_stats()["misses"] == 2


def test_keys_map_to_namespaced_blake2b(server):
    store = storage(server.target, namespace="ns1")
    expected = hashlib.blake2b(b"ns1\0abc", digest_size=16).digest()
    assert store.page_hash("abc") == expected
    store.set("abc", page(50))
    assert kvtier.StoreClient(server.target).lookup([expected], 0, LAYER_NUM)[0] == 1
    assert storage(server.target).namespace == "sglang|4x2x8:f16|layers=3"
    assert storage(server.target, namespace="ns2").exists("abc") is False


def test_sglang_config_separates_ranks_unless_mla(server):
    rank0 = KvtierStorage(sglang_config(tp_rank=0, target=server.target), {})
    rank1 = KvtierStorage(sglang_config(tp_rank=1, target=server.target), {})
    assert rank0.namespace == "sglang|4x2x8:f16|layers=3|model=org/model-7b|tp=0/2"
    rank0.set("rank-key", page(60))
    assert (rank0.exists("rank-key"), rank1.exists("rank-key")) == (True, False)
    mla0 = KvtierStorage(sglang_config(0, is_mla_model=True, target=server.target), {})
    mla1 = KvtierStorage(sglang_config(1, is_mla_model=True, target=server.target), {})
    mla0.set("mla-key", page(61))
    assert mla1.get("mla-key").tobytes() == page(61).tobytes()
    # Keyword options override extra_config.
    overridden = KvtierStorage(sglang_config(target="127.0.0.1:1"), None,
                               target=server.target, namespace="override")
    assert overridden.namespace == "override"
    assert overridden.set("o", page(62)) and overridden.exists("o") is True


def test_store_down_raises_unavailable():
    down = Server()
    target = down.target
    down.stop()
    store = storage(target)
    calls = [lambda: store.set("k", page(1)), lambda: store.get("k"),
             lambda: store.batch_get(["k"], [np.zeros(PAGE_ELEMENTS, np.float16)]),
             lambda: store.exists("k"), lambda: store.batch_exists(["k", "l"])]
    for call in calls:
        with pytest.raises(kvtier.StoreError) as caught:
            call()
        assert caught.value.code == "UNAVAILABLE"
    assert store.get_stats() == {"hits": 0, "misses": 0, "lost": 0, "stored": 0,
                                 "already_stored": 0}


def test_bad_options_raise_value_error(server):
    with pytest.raises(ValueError, match="'target' is required"):
        KvtierStorage(layout=LAYOUT)
    with pytest.raises(ValueError, match="'layout' is required"):
        KvtierStorage(target=server.target)
    with pytest.raises(ValueError, match="layer_num must be >= 1"):
        storage(server.target, layer_num=0)
    with pytest.raises(ValueError, match="option deadline_ms has the wrong type"):
        storage(server.target, deadline_ms="10")
    with pytest.raises(ValueError, match="layout .*head_dim"):
        storage(server.target, layout={**LAYOUT, "head_dim": 0})
    with pytest.raises(ValueError, match="layout .*incompatible constructor arguments"):
        storage(server.target, layout={**LAYOUT, "heads": 2})
    with pytest.raises(ValueError, match="NUL"):
        storage(server.target, namespace="a\0b")
    layout = kvtier.PageLayout(4, 2, 8, "f16")
    assert storage(server.target, layout=layout).page_bytes == PAGE_BYTES


def test_batch_exists_spans_lookup_chunks(server):
    store = storage(server.target)
    keys = [f"long-{i}" for i in range(4100)]  # 4096 keys per lookup
    store.batch_set([keys[0], keys[1], keys[4096], keys[4097]], [page(i) for i in range(4)])
    assert store.batch_exists(keys) == 2
    store.batch_set(keys[2:4096], list(np.zeros((4094, PAGE_ELEMENTS), np.float16)))
    assert store.batch_exists(keys) == 4098
