"""kvtier.vllm: a vLLM v1 KV connector that keeps prompt-prefix blocks in a kvtier store.

    vllm serve MODEL --kv-transfer-config '{"kv_connector": "KvtierConnector",
        "kv_connector_module_path": "kvtier.vllm", "kv_role": "kv_both",
        "kv_connector_extra_config": {"target": "10.0.0.5:50051",
                                      "token_file": "/run/kvtier/token"}}'

The interface is vLLM 0.11's ``KVConnectorBase_V1``. When ``vllm`` imports,
:class:`KvtierConnector` subclasses the real base class and metadata class;
otherwise it subclasses the minimal stand-ins below, which have the same
names and the methods vLLM's base provides (bind/clear of the metadata), so
that the connector runs and is tested without vLLM or torch.

Mapping. One vLLM block is one kvtier page: page (h_i, layer) holds block
i of the request for one layer, its K block's bytes then its V block's
bytes, which is kvtier's K-then-V arrangement of a
``PageLayout(block_size, num_kv_heads, head_size, dtype)``. h_i is
``kvtier.chain_hashes(seed, prompt, block_size)[i]``, a hash of the prompt's
first (i+1) blocks, with ``seed = chain_seed(cache_salt, fingerprint,
layout)``: the request's vLLM ``cache_salt`` (empty when unset) keeps salted
prefixes apart as vLLM's own prefix cache does, and the fingerprint is
``"vllm|<model_fingerprint>|tp=<tensor_parallel_size>"``, the model name by
default. Both are equal in every process. The layer is the layer's position
among the registered layer names in natural order ("layers.2" before
"layers.10"), plus ``tp_rank * num_layers``, so the ranks of one
tensor-parallel group store their head slices apart and the scheduler asks
for all of them in one lookup. Tenancy comes from the credential (token),
not from the keys.

What is saved: every full prompt block whose last token was computed in the
step, for new requests and for continuing (chunked-prefill or resumed)
requests alike. Blocks served by vLLM's own prefix cache were saved when they
were computed; blocks loaded from kvtier are not saved again; a partial
last block and blocks of generated tokens are never saved.

What is matched: the longest prefix of whole prompt blocks stored for every
layer of every rank, never the block holding the prompt's last token (vLLM
must compute at least one token), beyond what vLLM has locally.

Transfers are synchronous: ``start_load_kv`` loads every layer with one
batched ``get_pages`` per layer and ``save_kv_layer`` stores a layer with one
batched ``put_pages``; ``get_num_new_matched_tokens`` thus never returns
None and ``get_finished`` reports nothing. Blocks move through host memory
with numpy: the KV caches must be C-contiguous numpy arrays or CPU tensors
(DLPack), [2, num_blocks, block_size, num_kv_heads, head_size] (FlashAttention,
NHD). K and V of a block are not adjacent there, so one gather copy into a
contiguous staging buffer per batch is unavoidable.

Failures never raise into vLLM. A lookup that fails counts as no match (the
request computes everything; waiting with None instead would stall requests
for as long as the store is down). A page that cannot be loaded is not served:
its block id is reported by ``get_block_ids_with_load_errors`` and vLLM
recomputes from there. A failed save is a future miss. Each is logged and
counted in :class:`KvtierConnectorCounters`.

Not thread-safe: vLLM calls the scheduler side from the scheduler thread and
the worker side from the model runner thread, each on its own connector.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import logging
import re
from typing import Any, NamedTuple

import numpy as np

import kvtier

__all__ = ["BlockPage", "KVConnectorRole", "KvtierConnector", "KvtierConnectorCounters",
           "KvtierConnectorMetadata"]

logger = logging.getLogger(__name__)

try:
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (  # type: ignore
        KVConnectorBase_V1,
        KVConnectorMetadata,
        KVConnectorRole,
    )
    HAVE_VLLM = True
except ImportError:
    HAVE_VLLM = False

    class KVConnectorRole(enum.Enum):  # type: ignore[no-redef]
        """Where a connector runs, as vLLM's enum of the same name."""
        SCHEDULER = 0
        WORKER = 1

    class KVConnectorMetadata:  # type: ignore[no-redef]
        """Stand-in for vLLM's: what the scheduler side tells the worker side each step."""

    class KVConnectorBase_V1:  # type: ignore[no-redef]
        """Stand-in for vLLM's base class: the state and methods the real one provides."""

        def __init__(self, vllm_config: Any, role: KVConnectorRole,
                     kv_cache_config: Any = None) -> None:
            if vllm_config.kv_transfer_config is None:
                raise ValueError("kv_transfer_config must be set for KVConnectorBase_V1")
            self._connector_metadata: KVConnectorMetadata | None = None
            self._vllm_config = vllm_config
            self._kv_transfer_config = vllm_config.kv_transfer_config
            self._kv_cache_config = kv_cache_config
            self._role = role

        @property
        def role(self) -> KVConnectorRole:
            return self._role

        def bind_connector_metadata(self, connector_metadata: KVConnectorMetadata) -> None:
            self._connector_metadata = connector_metadata

        def clear_connector_metadata(self) -> None:
            self._connector_metadata = None

        def has_connector_metadata(self) -> bool:
            return self._connector_metadata is not None

        def _get_connector_metadata(self) -> KVConnectorMetadata:
            assert self._connector_metadata is not None, "no connector metadata bound"
            return self._connector_metadata

# vLLM 0.11.0's base takes (vllm_config, role); later ones add kv_cache_config.
_BASE_TAKES_KV_CACHE_CONFIG = (
    "kv_cache_config" in inspect.signature(KVConnectorBase_V1.__init__).parameters)

# kv_connector_extra_config keys: (type, default). "target" is required.
_OPTIONS: dict[str, tuple[type, Any]] = {
    "target": (str, None),             # host:port of kvtier-server
    **kvtier.CLIENT_OPTIONS,
    "deadline_ms": (int, 5000),        # per attempt; bounds a scheduler stall
    "max_attempts": (int, 2),          # UNAVAILABLE is retried up to this many tries
    "model_fingerprint": (str, None),  # default: vllm_config.model_config.model
}

_DTYPES = {"float16": "f16", "half": "f16", "bfloat16": "bf16", "float32": "f32",
           "float": "f32"}


class BlockPage(NamedTuple):
    """One block of a request to move: vLLM block ``block_id`` <-> pages (page_hash, layer)."""
    block_id: int
    page_hash: bytes


@dataclasses.dataclass
class KvtierConnectorMetadata(KVConnectorMetadata):
    """One step's transfers. No hash appears twice in ``saves`` or in both lists."""
    loads: list[BlockPage] = dataclasses.field(default_factory=list)
    saves: list[BlockPage] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class KvtierConnectorCounters:
    """What one connector did since it was built. Pages count (block, layer) pairs."""
    lookups: int = 0                # scheduler: lookups the store answered
    lookup_errors: int = 0          # scheduler: failed lookups, answered as no match
    loaded_pages: int = 0           # worker: pages written into the KV cache
    load_failed_pages: int = 0      # worker: pages not served (missing, lost, RPC failed)
    saved_pages: int = 0            # worker: pages the store did not hold before
    already_present_pages: int = 0  # worker: pages saved that the store already held
    save_failed_pages: int = 0      # worker: pages whose put failed


@dataclasses.dataclass
class _RequestState:
    """Scheduler side: a request between its first lookup and request_finished."""
    chain: list[bytes]  # one hash per full prompt block
    local_tokens: int = 0  # num_computed_tokens at the last get_num_new_matched_tokens
    block_ids: list[int] = dataclasses.field(default_factory=list)  # group 0's table


class _Layer(NamedTuple):
    layer_key: int         # the PageKey layer
    blocks: np.ndarray     # uint8 view [2 (K, V), num_blocks, block bytes] of the cache


class KvtierConnector(KVConnectorBase_V1):
    """vLLM KV connector whose external cache is a kvtier store (see the module doc).

    Raises ValueError at construction for a configuration it cannot serve:
    no target, an unknown option, pipeline parallelism, MLA, or a cache
    dtype other than f16, bf16 and f32.
    """

    def __init__(self, vllm_config: Any, role: KVConnectorRole,
                 kv_cache_config: Any = None) -> None:
        if _BASE_TAKES_KV_CACHE_CONFIG:
            super().__init__(vllm_config, role, kv_cache_config)
        else:
            super().__init__(vllm_config, role)
        options = _parse_options(vllm_config.kv_transfer_config.kv_connector_extra_config)
        model, cache, parallel = (vllm_config.model_config, vllm_config.cache_config,
                                  vllm_config.parallel_config)
        if getattr(parallel, "pipeline_parallel_size", 1) != 1:
            raise ValueError("kvtier.vllm: pipeline parallelism is not supported")
        if getattr(model, "use_mla", False):
            raise ValueError("kvtier.vllm: MLA caches are not [2, blocks, ...]; not supported")
        self._block_size: int = cache.block_size
        self._layout = kvtier.PageLayout(self._block_size, model.get_num_kv_heads(parallel),
                                         model.get_head_size(), _kvtier_dtype(cache, model))
        self._num_layers: int = model.get_num_layers(parallel)
        self._tp_size: int = parallel.tensor_parallel_size
        self._fingerprint = "vllm|{}|tp={}".format(
            options["model_fingerprint"] or model.model, self._tp_size).encode()
        self._client = kvtier.StoreClient(
            options["target"], deadline_ms=options["deadline_ms"],
            max_attempts=options["max_attempts"], tls=options["tls"],
            tls_ca_file=options["tls_ca_file"], tls_cert_file=options["tls_cert_file"],
            tls_key_file=options["tls_key_file"], tls_server_name=options["tls_server_name"],
            token=options["token"], token_file=options["token_file"])
        self.counters = KvtierConnectorCounters()
        # Scheduler side.
        self._requests: dict[str, _RequestState] = {}
        self._pending_loads: list[BlockPage] = []
        # Worker side.
        self._tp_rank = _tp_rank(parallel, self._tp_size) if role == KVConnectorRole.WORKER else 0
        self._layers: dict[str, _Layer] = {}
        self._load_errors: set[int] = set()

    @classmethod
    def get_required_kvcache_layout(cls, vllm_config: Any) -> str | None:
        """Blocks are gathered as [block_size, num_kv_heads, head_size]: NHD."""
        return "NHD"

    # ---- Scheduler side ----

    def get_num_new_matched_tokens(self, request: Any,
                                   num_computed_tokens: int) -> tuple[int | None, bool]:
        """Tokens beyond ``num_computed_tokens`` loadable from the store, and False (sync).

        Whole blocks only, never the block of the prompt's last token. A
        failed lookup answers 0 (counted, logged); never None, never raises.
        """
        state = self._request_state(request)
        state.local_tokens = num_computed_tokens
        prompt_tokens = len(request.prompt_token_ids or ())
        matchable = min(max(prompt_tokens - 1, 0) // self._block_size, len(state.chain))
        if matchable * self._block_size <= num_computed_tokens:
            return 0, False
        try:
            prefix_pages = self._lookup_prefix(state.chain[:matchable])
        except kvtier.StoreError as error:
            self.counters.lookup_errors += 1
            logger.warning("kvtier lookup for request %s failed (%s: %s); computing it all",
                           request.request_id, error.code, error)
            return 0, False
        self.counters.lookups += 1
        return max(prefix_pages * self._block_size - num_computed_tokens, 0), False

    def update_state_after_alloc(self, request: Any, blocks: Any,
                                 num_external_tokens: int) -> None:
        """Queues the loads of the matched blocks into the blocks just allocated.

        REQUIRES: get_num_new_matched_tokens was called for ``request`` (vLLM's order).
        """
        if num_external_tokens == 0:
            return
        state = self._requests[request.request_id]
        block_ids = blocks.get_block_ids()[0]
        first = state.local_tokens // self._block_size
        last = (state.local_tokens + num_external_tokens) // self._block_size
        self._pending_loads.extend(
            BlockPage(block_ids[i], state.chain[i]) for i in range(first, last))

    def build_connector_meta(self, scheduler_output: Any) -> KvtierConnectorMetadata:
        """This step's loads (queued since the last call) and saves of newly full blocks."""
        meta = KvtierConnectorMetadata(loads=self._pending_loads)
        self._pending_loads = []
        seen = {page.page_hash for page in meta.loads}
        scheduled = scheduler_output.num_scheduled_tokens
        for new in scheduler_output.scheduled_new_reqs:
            state = self._requests.get(new.req_id)
            if state is not None:
                state.block_ids = list(new.block_ids[0])
                self._add_saves(state, new.num_computed_tokens, scheduled.get(new.req_id, 0),
                                meta.saves, seen)
        cached = scheduler_output.scheduled_cached_reqs
        resumed = _resumed_ids(cached)
        for i, req_id in enumerate(cached.req_ids):
            state = self._requests.get(req_id)
            if state is None:
                continue
            new_block_ids = cached.new_block_ids[i]
            if new_block_ids is not None:
                if req_id in resumed:  # a resumed request gets its whole table again
                    state.block_ids = list(new_block_ids[0])
                else:
                    state.block_ids.extend(new_block_ids[0])
            self._add_saves(state, cached.num_computed_tokens[i], scheduled.get(req_id, 0),
                            meta.saves, seen)
        return meta

    def request_finished(self, request: Any,
                         block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        """Forgets the request. Saves are done by now, so its blocks may be freed."""
        self._requests.pop(request.request_id, None)
        return False, None

    def _request_state(self, request: Any) -> _RequestState:
        state = self._requests.get(request.request_id)
        if state is None:
            salt = (getattr(request, "cache_salt", None) or "").encode()
            seed = kvtier.chain_seed(salt, self._fingerprint, self._layout)
            chain = kvtier.chain_hashes(seed, list(request.prompt_token_ids or ()),
                                        self._block_size)
            state = self._requests[request.request_id] = _RequestState(chain=chain)
        return state

    def _add_saves(self, state: _RequestState, num_computed_tokens: int, num_scheduled: int,
                   saves: list[BlockPage], seen: set[bytes]) -> None:
        """Appends the prompt blocks that become full in [computed, computed + scheduled)."""
        end = min((num_computed_tokens + num_scheduled) // self._block_size, len(state.chain))
        for i in range(num_computed_tokens // self._block_size, end):
            if state.chain[i] not in seen:
                seen.add(state.chain[i])
                saves.append(BlockPage(state.block_ids[i], state.chain[i]))

    def _lookup_prefix(self, chain: list[bytes]) -> int:
        """Leading pages of ``chain`` stored for every layer of every rank."""
        return self._client.lookup_prefix(chain, 0, self._num_layers * self._tp_size)

    # ---- Worker side ----

    def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
        """Takes each layer's paged cache, [2, num_blocks, block_size, heads, head_size].

        Raises ValueError for a layer count, shape, element size or memory
        this connector cannot move.
        """
        if len(kv_caches) != self._num_layers:
            raise ValueError(f"kvtier.vllm: {len(kv_caches)} KV caches, but the model has "
                             f"{self._num_layers} layers")
        for index, name in enumerate(sorted(kv_caches, key=_natural_key)):
            self._layers[name] = _Layer(self._tp_rank * self._num_layers + index,
                                        _block_bytes(name, kv_caches[name], self._layout))

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        """Loads every queued block of every layer (one get_pages per layer)."""
        loads = self._get_connector_metadata().loads
        if not loads:
            return
        hashes = list(dict.fromkeys(page.page_hash for page in loads))
        row_of = {page_hash: row for row, page_hash in enumerate(hashes)}
        rows = np.array([row_of[page.page_hash] for page in loads], np.intp)
        block_ids = np.array([page.block_id for page in loads], np.intp)
        staging = np.empty((len(hashes), self._layout.page_bytes), np.uint8)
        half = self._layout.page_bytes // 2
        for name, layer in self._layers.items():
            try:
                statuses = self._client.get_pages([(h, layer.layer_key) for h in hashes], staging)
            except kvtier.StoreError as error:
                logger.warning("kvtier load of %s failed (%s: %s)", name, error.code, error)
                statuses = ["error"] * len(hashes)
            usable = np.array([status == "ok" for status in statuses])[rows]
            layer.blocks[0, block_ids[usable]] = staging[rows[usable], :half]
            layer.blocks[1, block_ids[usable]] = staging[rows[usable], half:]
            self._load_errors.update(block_ids[~usable].tolist())
            self.counters.loaded_pages += int(usable.sum())
            self.counters.load_failed_pages += int((~usable).sum())

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Nothing to wait for: start_load_kv loads synchronously."""

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any,
                      **kwargs: Any) -> None:
        """Stores this step's saved blocks of one layer (one put_pages).

        Reads the cache registered under ``layer_name``, which is the tensor
        vLLM passes as ``kv_layer``.
        """
        saves = self._get_connector_metadata().saves
        if not saves:
            return
        layer = self._layers[layer_name]
        block_ids = np.array([page.block_id for page in saves], np.intp)
        staging = np.empty((len(saves), 2, self._layout.page_bytes // 2), np.uint8)
        np.take(layer.blocks[0], block_ids, axis=0, out=staging[:, 0])
        np.take(layer.blocks[1], block_ids, axis=0, out=staging[:, 1])
        keys = [(page.page_hash, layer.layer_key) for page in saves]
        try:
            present = self._client.put_pages(keys, self._layout,
                                             staging.reshape(len(saves), -1))
        except kvtier.StoreError as error:
            self.counters.save_failed_pages += len(saves)
            logger.warning("kvtier save of %s failed (%s: %s)", layer_name, error.code, error)
            return
        self.counters.already_present_pages += sum(present)
        self.counters.saved_pages += len(present) - sum(present)

    def wait_for_save(self) -> None:
        """Nothing to wait for: save_kv_layer stores synchronously."""

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None,
                                                                 set[str] | None]:
        """No transfer outlives its step."""
        return None, None

    def get_block_ids_with_load_errors(self) -> set[int]:
        """Blocks whose pages failed to load since the last call (then forgotten)."""
        failed, self._load_errors = self._load_errors, set()
        return failed


def _parse_options(extra: dict[str, Any] | None) -> dict[str, Any]:
    extra = dict(extra or {})
    unknown = sorted(set(extra) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"kvtier.vllm: unknown kv_connector_extra_config keys {unknown}; "
                         f"known: {sorted(_OPTIONS)}")
    options = {}
    for name, (kind, default) in _OPTIONS.items():
        value = extra.get(name, default)
        if value is not None and not isinstance(value, kind):
            raise ValueError(f"kvtier.vllm: {name} must be a {kind.__name__}, not {value!r}")
        options[name] = value
    if not options["target"]:
        raise ValueError("kvtier.vllm: kv_connector_extra_config needs a 'target' (host:port)")
    return options


def _kvtier_dtype(cache_config: Any, model_config: Any) -> str:
    name = str(cache_config.cache_dtype)
    if name == "auto":
        name = str(model_config.dtype)
    name = name.removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"kvtier.vllm: KV cache dtype {name!r} is not supported (f16, bf16, "
                         "f32; fp8 caches keep their scales outside the blocks)")
    return _DTYPES[name]


def _tp_rank(parallel_config: Any, tp_size: int) -> int:
    if HAVE_VLLM and tp_size > 1:
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank
        return get_tensor_model_parallel_rank()
    return getattr(parallel_config, "rank", 0) % tp_size


def _resumed_ids(cached: Any) -> set[str]:
    """Requests resumed from preemption: a set in newer vLLM, a flag list in 0.11."""
    if hasattr(cached, "resumed_req_ids"):
        return set(cached.resumed_req_ids)
    flags = getattr(cached, "resumed_from_preemption", None) or []
    return {req_id for req_id, resumed in zip(cached.req_ids, flags) if resumed}


def _natural_key(name: str) -> list[Any]:
    """"model.layers.2.attn" before "model.layers.10.attn"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _block_bytes(name: str, cache: Any, layout: kvtier.PageLayout) -> np.ndarray:
    """A uint8 view [2, num_blocks, page_bytes / 2] of one layer's paged cache."""
    shape = tuple(cache.shape)
    expected = (layout.page_size, layout.n_kv_heads, layout.head_dim)
    if len(shape) != 5 or shape[0] != 2 or shape[2:] != expected:
        raise ValueError(f"kvtier.vllm: {name} has shape {shape}, not (2, num_blocks, "
                         f"{', '.join(map(str, expected))})")
    try:
        array = np.asarray(kvtier.page_view(cache, writable=True))
    except (kvtier.StoreError, TypeError) as error:
        raise ValueError(f"kvtier.vllm: {name}: {error}") from error
    if not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(f"kvtier.vllm: {name} must be C-contiguous and writable")
    blocks = array.view(np.uint8).reshape(2, shape[1], -1)
    if blocks.shape[2] * 2 != layout.page_bytes:
        raise ValueError(f"kvtier.vllm: {name} has {array.itemsize}-byte elements, but the "
                         f"cache dtype is {layout.dtype}")
    return blocks
