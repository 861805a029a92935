"""A llama-cpp-python cache whose prefix states live in a kvtier store.

    from llama_cpp import Llama
    from kvtier.llama_cpp import KvtierLlamaCache

    llm = Llama(model_path="model.gguf", n_ctx=8192)
    llm.set_cache(KvtierLlamaCache(llm, "127.0.0.1:50051"))
    llm.create_completion(document_and_question)  # any process that loads the same
                                                  # GGUF the same way reuses the document

llama.cpp saves a context as one opaque state (K and V of every layer and
token, in its own format), so a state is stored whole, as a blob, and indexed
by its tokens' key chain: a prompt that shares k full pages (`page_tokens`
tokens each) with a stored state finds it by a Lookup and restores exactly
k * page_tokens tokens; llama evaluates the rest of the prompt.

Store layout (integers little-endian):

  chain  seed = chain_seed(tenant_salt, fingerprint, PageLayout(page_tokens, 1, 1, f16)),
         h_i = chain_hashes(seed, tokens, page_tokens)[i].
  index  key (h_i, INDEX_LAYER), one INDEX_LAYOUT page (128 bytes) per full page
         of a stored state's tokens, naming the blob that holds them:
           "KVLI" | u16 version | u16 0 | u32 n_tokens | u64 blob_bytes | 16s blob_id
  blob   keys (blob_id, FIRST_CHUNK_LAYER + i), CHUNK_LAYOUT pages (4 MiB), the
         last one zero-padded past blob_bytes:
           header (64 bytes): "KVLS" | u16 version | u16 header_bytes | u32 n_tokens
             | u32 n_vocab | u64 seed | u64 state_bytes | 32s digest
           payload: n_tokens x i32 input_ids | state_bytes of llama_state_get_data
         digest = sha256(u64 payload bytes || sha256 of each 4 MiB segment of the
         payload), the segments hashed in parallel; blob_id = digest[:16].

Nothing read from the store is unpickled or trusted: magic, version, lengths,
digest, and that the stored tokens start with the prompt's matched prefix are
checked before llama sees a state. Store pages are content-addressed (a stored
key keeps its first bytes), so a reader that finds a blob damaged or gone
deletes it and the index pages that led to it, and the next save of that
prefix stores it again. A store outage is a miss on reads and a skipped save,
each with a KvtierCacheWarning; generation never fails because of the store.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import struct
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

try:
    import llama_cpp
    from llama_cpp.llama import Llama, LlamaState
    from llama_cpp.llama_cache import BaseLlamaCache
except ImportError as error:  # the adapter is optional; the rest of kvtier is not
    raise ImportError(
        "kvtier.llama_cpp needs llama-cpp-python: pip install llama-cpp-python==0.3.36"
    ) from error

import kvtier

__all__ = ["CHUNK_LAYOUT", "FIRST_CHUNK_LAYER", "INDEX_LAYER", "INDEX_LAYOUT", "IndexRecord",
           "KvtierCacheWarning", "KvtierLlamaCache", "KvtierLlamaCacheStats", "model_fingerprint"]

INDEX_LAYOUT = kvtier.PageLayout(page_size=1, n_kv_heads=1, head_dim=32, dtype="f16")
CHUNK_LAYOUT = kvtier.PageLayout(page_size=1024, n_kv_heads=8, head_dim=128, dtype="f16")
INDEX_LAYER = 0
FIRST_CHUNK_LAYER = 1

Key = Tuple[bytes, int]

_FORMAT_TAG = b"kvtier-llama-cpp-state"
_VERSION = 1
_INDEX = struct.Struct("<4sHHIQ16s")
_INDEX_MAGIC = b"KVLI"
_HEADER = struct.Struct("<4sHHIIQQ32s")
_HEADER_MAGIC = b"KVLS"
_SEGMENT_BYTES = 4 << 20
_MAX_BLOB_BYTES = 1 << 40
# Context parameters that change what a saved state holds or how llama.cpp
# reads it back (K/V types, V transposition with flash attention, RoPE).
_STATE_PARAMS = ("type_k", "type_v", "flash_attn_type", "swa_full", "kv_unified", "n_seq_max",
                 "ctx_type", "embeddings", "attention_type", "pooling_type",
                 "rope_scaling_type", "rope_freq_base", "rope_freq_scale", "yarn_ext_factor",
                 "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow", "yarn_orig_ctx")


class KvtierCacheWarning(RuntimeWarning):
    """The store failed, or held a damaged state; the cache went on as if it missed."""


class _Damaged(ValueError):
    """A stored page or blob failed validation."""


@dataclasses.dataclass
class KvtierLlamaCacheStats:
    """What one KvtierLlamaCache did since it was made."""

    hits: int = 0  # states returned to llama
    misses: int = 0  # KeyErrors: nothing stored beyond llama's own context, or unusable
    damaged: int = 0  # index pages or blobs that failed validation (deleted)
    evicted: int = 0  # blobs whose pages the store no longer held (index deleted)
    store_errors: int = 0  # store calls that raised StoreError
    saved_states: int = 0  # blobs stored
    saved_bytes: int = 0  # their bytes, padding excluded
    loaded_bytes: int = 0  # blob bytes read for hits
    restored_tokens: int = 0  # tokens of the last hit


@dataclasses.dataclass(frozen=True)
class IndexRecord:
    """An index page: the blob that holds a state whose tokens start with a chain's pages."""

    n_tokens: int
    blob_bytes: int
    blob_id: bytes

    def page(self) -> bytes:
        """The INDEX_LAYOUT page that stores this record."""
        packed = _INDEX.pack(_INDEX_MAGIC, _VERSION, 0, self.n_tokens, self.blob_bytes,
                             self.blob_id)
        return packed.ljust(INDEX_LAYOUT.page_bytes, b"\0")

    @staticmethod
    def parse(page: Union[bytes, bytearray, memoryview, np.ndarray]) -> "IndexRecord":
        """The record in `page`; raises ValueError when it is not one of this version."""
        magic, version, _, n_tokens, blob_bytes, blob_id = _INDEX.unpack_from(page, 0)
        if magic != _INDEX_MAGIC or version != _VERSION:
            raise _Damaged("index page: unknown magic or version")
        if n_tokens == 0 or not _HEADER.size < blob_bytes <= _MAX_BLOB_BYTES:
            raise _Damaged(f"index page: {n_tokens} tokens in {blob_bytes} bytes")
        return IndexRecord(n_tokens, blob_bytes, blob_id)

    @property
    def n_chunks(self) -> int:
        return -(-self.blob_bytes // CHUNK_LAYOUT.page_bytes)

    def chunk_keys(self) -> List[Key]:
        """Keys of the blob's CHUNK_LAYOUT pages, in order."""
        return [(self.blob_id, FIRST_CHUNK_LAYER + i) for i in range(self.n_chunks)]


class KvtierLlamaCache(BaseLlamaCache):
    """llama-cpp-python's prompt cache, kept in a kvtier store that processes share.

    `create_completion` asks `cache[prompt_tokens]` before it evaluates a prompt
    and stores `cache[prompt + completion] = save_state()` after. A lookup
    finds the longest page-aligned prefix of the prompt that some saved state
    starts with and returns that state cut to the prefix: `n_tokens` is the
    prefix length and `input_ids` hold the prefix then -1, so llama keeps
    those tokens of the restored K/V cache and evaluates the rest. Nothing is
    fetched when llama's own context already holds as long a prefix.

    No row of `scores` is stored: with `logits_all=False` llama samples from
    the context's logits, and a restored state always evaluates at least one
    token before sampling. Restored states carry one zero row (load_state
    broadcasts it). Llamas with `logits_all=True` (prompt logprobs, draft
    models) would read per-token rows of the restored prefix, so they are
    refused. A restored state sets llama's seed to the saving process's, as
    llama-cpp-python's own caches do.

    One cache per Llama (it skips fetches by that Llama's own context). Not
    thread-safe (neither is Llama). The store bounds its size
    (ram_bytes, disk_bytes); this cache evicts nothing, and `cache_size` is
    the bytes it saved.
    """

    def __init__(self, llama: Llama, store: Union[str, kvtier.StoreClient], *,
                 tenant_salt: bytes = b"", page_tokens: int = 16,
                 fingerprint: Optional[bytes] = None) -> None:
        """Binds the cache to `llama`'s model and context shape.

        store: a StoreClient or a target ("host:port"; connected with a 10 s
        deadline and 2 attempts, so an outage costs a generation little).
        tenant_salt: separates key spaces that share a store and a token.
        page_tokens: tokens per chain page, the granularity of reuse (1..1024).
        fingerprint: the model's identity; default model_fingerprint(llama).
        Raises ValueError for a Llama with logits_all=True.
        """
        if getattr(llama, "_logits_all", False):
            raise ValueError("KvtierLlamaCache serves Llama(logits_all=False) only: restored "
                             "prefixes carry no per-token logits")
        super().__init__(capacity_bytes=0)  # the store's tiers bound the size
        self._client = (kvtier.StoreClient(store, deadline_ms=10_000, max_attempts=2)
                        if isinstance(store, str) else store)
        self._llama = weakref.ref(llama)  # llama holds the cache; no cycle
        self._n_ctx = int(llama.n_ctx())
        self._n_vocab = int(llama.n_vocab())
        self._page_tokens = int(page_tokens)
        chain_layout = kvtier.PageLayout(page_size=self._page_tokens, n_kv_heads=1, head_dim=1,
                                         dtype="f16")
        self._seed = kvtier.chain_seed(tenant_salt, fingerprint or model_fingerprint(llama),
                                       chain_layout)
        self.stats = KvtierLlamaCacheStats()

    @property
    def cache_size(self) -> int:
        """Bytes of the states this cache saved (the store's own size: client.stats())."""
        return self.stats.saved_bytes

    def chain(self, tokens: Sequence[int]) -> List[bytes]:
        """The key chain of `tokens`' full pages: index page i is (chain[i], INDEX_LAYER)."""
        n_full = len(tokens) // self._page_tokens * self._page_tokens
        if n_full == 0:
            return []
        return kvtier.chain_hashes(self._seed, [int(t) for t in tokens[:n_full]],
                                   self._page_tokens)

    def __contains__(self, key: Sequence[int]) -> bool:
        """Whether the store indexes a page-aligned prefix of `key` (Lookups only;
        the blob may still turn out gone or damaged)."""
        chain = self.chain(key)
        if not chain:
            return False
        try:
            return self._client.lookup_prefix(chain, INDEX_LAYER, 1) > 0
        except kvtier.StoreError as error:
            self._store_failed("lookup", error)
            return False

    def __getitem__(self, key: Sequence[int]) -> LlamaState:
        """The state of the longest stored page-aligned prefix of `key`, cut to it.

        Raises KeyError when there is none longer than llama's own context, or
        when the store fails or holds it damaged (counted; see stats).
        """
        tokens = np.asarray(key, dtype=np.int64)
        state = self._load(tokens)
        if state is None:
            self.stats.misses += 1
            raise KeyError("kvtier holds no usable prefix state for these tokens")
        self.stats.hits += 1
        self.stats.restored_tokens = state.n_tokens
        return state

    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None:
        """Saves `value` under every full page of the tokens it and `key` agree on.

        Does nothing when the store already indexes all those pages; a store
        failure is a warning, not an error.
        """
        ids = np.asarray(value.input_ids[: value.n_tokens], dtype=np.int64)
        n_pages = _common_prefix(ids, np.asarray(key, dtype=np.int64)) // self._page_tokens
        if n_pages == 0:
            return
        chain = self.chain(ids[: n_pages * self._page_tokens])
        try:
            indexed = self._client.lookup_prefix(chain, INDEX_LAYER, 1)
            if indexed == n_pages:
                return
            blob, record = self._encode(value, ids)
            self._client.put_pages(record.chunk_keys(), CHUNK_LAYOUT, blob)
            # Index pages after the blob: a reader never finds an index page first.
            page = record.page()
            self._client.put_pages([(h, INDEX_LAYER) for h in chain[indexed:]], INDEX_LAYOUT,
                                   [page] * (n_pages - indexed))
        except kvtier.StoreError as error:
            self._store_failed("save", error)
            return
        self.stats.saved_states += 1
        self.stats.saved_bytes += record.blob_bytes

    def _load(self, tokens: np.ndarray) -> Optional[LlamaState]:
        chain = self.chain(tokens)
        if not chain:
            return None
        matched, record = 0, None
        try:
            matched = self._client.lookup_prefix(chain, INDEX_LAYER, 1)
            if matched * self._page_tokens <= self._live_prefix(tokens):
                return None  # llama would keep its own context
            record = self._read_index(chain[matched - 1])
            if record is None or record.n_tokens > self._n_ctx:
                return None  # gone since the lookup, or longer than this context
            blob = np.empty((record.n_chunks, CHUNK_LAYOUT.page_bytes), np.uint8)
            statuses = self._client.get_pages(record.chunk_keys(), blob)
            if any(status != "ok" for status in statuses):
                if any(status not in ("not_found", "lost") for status in statuses):
                    raise _Damaged(f"blob pages: {sorted(set(statuses))}")
                self.stats.evicted += 1
                self._forget(chain[:matched], record)
                return None
            state = self._decode(blob.reshape(-1), record, tokens[: matched * self._page_tokens])
        except kvtier.StoreError as error:
            self._store_failed("load", error)
            return None
        except _Damaged as damage:
            self.stats.damaged += 1
            warnings.warn(f"kvtier: a stored llama state is damaged ({damage}); deleted it",
                          KvtierCacheWarning, stacklevel=3)
            self._forget(chain[:matched], record)
            return None
        self.stats.loaded_bytes += record.blob_bytes
        return state

    def _read_index(self, chain_hash: bytes) -> Optional[IndexRecord]:
        page = np.empty(INDEX_LAYOUT.page_bytes, np.uint8)
        status = self._client.get_pages([(chain_hash, INDEX_LAYER)], [page])[0]
        if status in ("not_found", "lost"):
            return None
        if status != "ok":
            raise _Damaged(f"index page: {status}")
        return IndexRecord.parse(page)

    def _decode(self, blob: np.ndarray, record: IndexRecord, prefix: np.ndarray) -> LlamaState:
        """The state in `blob` cut to `prefix`; raises _Damaged on any inconsistency."""
        magic, version, header_bytes, n_tokens, n_vocab, seed, state_bytes, digest = (
            _HEADER.unpack_from(blob, 0))
        if magic != _HEADER_MAGIC or version != _VERSION or header_bytes != _HEADER.size:
            raise _Damaged("blob header: unknown magic or version")
        if n_tokens != record.n_tokens or n_tokens < len(prefix) or n_vocab != self._n_vocab:
            raise _Damaged(f"blob header: {n_tokens} tokens, n_vocab {n_vocab}")
        if _HEADER.size + 4 * n_tokens + state_bytes != record.blob_bytes:
            raise _Damaged("blob header: lengths do not add up to the index's")
        payload = memoryview(blob)[_HEADER.size: record.blob_bytes]
        actual = _digest(payload)
        if actual != digest or actual[:16] != record.blob_id:
            raise _Damaged("blob digest mismatch")
        ids = np.frombuffer(payload, dtype="<i4", count=n_tokens)
        if not np.array_equal(ids[: len(prefix)], prefix):
            raise _Damaged("the stored tokens do not start with the prompt's prefix")
        input_ids = np.full(self._n_ctx, -1, dtype=np.intc)
        input_ids[: len(prefix)] = ids[: len(prefix)]
        # A view, not bytes: load_state copies it once into llama's own buffer.
        llama_state = payload[4 * n_tokens:]
        return LlamaState(input_ids=input_ids, scores=np.zeros((1, n_vocab), np.single),
                          n_tokens=len(prefix), llama_state=llama_state,  # type: ignore[arg-type]
                          llama_state_size=state_bytes, seed=seed)

    def _encode(self, value: LlamaState, ids: np.ndarray) -> Tuple[np.ndarray, IndexRecord]:
        """The blob of `value` as CHUNK_LAYOUT pages (rows), and its index record."""
        state_bytes = int(value.llama_state_size)
        ids_bytes = 4 * len(ids)
        blob_bytes = _HEADER.size + ids_bytes + state_bytes
        chunks = -(-blob_bytes // CHUNK_LAYOUT.page_bytes)
        blob = np.zeros((chunks, CHUNK_LAYOUT.page_bytes), np.uint8)
        flat = blob.reshape(-1)
        payload_start = _HEADER.size
        flat[payload_start: payload_start + ids_bytes] = ids.astype("<i4").view(np.uint8)
        flat[payload_start + ids_bytes: blob_bytes] = np.frombuffer(
            value.llama_state, np.uint8, count=state_bytes)
        digest = _digest(memoryview(flat)[payload_start:blob_bytes])
        _HEADER.pack_into(flat, 0, _HEADER_MAGIC, _VERSION, _HEADER.size, len(ids),
                          self._n_vocab, int(value.seed) & (2**64 - 1), state_bytes, digest)
        return blob, IndexRecord(len(ids), blob_bytes, digest[:16])

    def _forget(self, chain: Sequence[bytes], record: Optional[IndexRecord]) -> None:
        """Deletes index pages that lead to an unusable blob, and the blob."""
        keys = [(h, INDEX_LAYER) for h in chain]
        if record is not None:
            keys += record.chunk_keys()
        try:
            if keys:
                self._client.delete(keys)
        except kvtier.StoreError as error:
            self._store_failed("delete", error)

    def _live_prefix(self, tokens: np.ndarray) -> int:
        llama = self._llama()
        if llama is None:
            return 0
        return _common_prefix(np.asarray(llama.input_ids[: llama.n_tokens], np.int64), tokens)

    def _store_failed(self, what: str, error: kvtier.StoreError) -> None:
        self.stats.store_errors += 1
        warnings.warn(f"kvtier: llama state {what} failed ({getattr(error, 'code', '?')}); "
                      "went on without the store", KvtierCacheWarning, stacklevel=4)


def model_fingerprint(llama: Llama) -> bytes:
    """16 bytes equal in every process that loads the same model file the same way.

    Covers the GGUF file (its size and blake2b of 16 of its MiB: first, last,
    and evenly between), llama-cpp-python's version (llama.cpp's state format
    follows it), the model's metadata and sizes, a LoRA adapter's file and
    scale, and the context parameters a saved state depends on; not n_ctx,
    batch sizes or threads.
    """
    digest = hashlib.blake2b(_FORMAT_TAG, digest_size=16)

    def add(name: str, value: object) -> None:
        digest.update(f"{name}={value!r};".encode())

    add("gguf", _file_identity(llama.model_path))
    add("llama_cpp", llama_cpp.__version__)
    add("n_vocab", llama.n_vocab())
    add("n_embd", llama.n_embd())
    for name, value in sorted(llama.metadata.items()):
        add("metadata." + name, value)
    lora_path = getattr(llama, "lora_path", None)
    if lora_path:
        add("lora", (_file_identity(lora_path), getattr(llama, "lora_scale", 1.0)))
    for name in _STATE_PARAMS:
        if hasattr(llama.context_params, name):
            add(name, getattr(llama.context_params, name))
    return digest.digest()


def _file_identity(path: Union[str, os.PathLike]) -> str:
    mib = 1 << 20
    size = os.path.getsize(path)
    samples = 16
    span = max(size - mib, 0)
    offsets = sorted({i * span // (samples - 1) for i in range(samples)})
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        for offset in offsets:
            file.seek(offset)
            digest.update(file.read(mib))
    return f"{size}:{digest.hexdigest()}"


@functools.lru_cache(maxsize=1)
def _digest_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1),
                              thread_name_prefix="kvtier-digest")


def _digest(payload: memoryview) -> bytes:
    """sha256 over the segments' sha256, hashed in parallel (hashlib drops the GIL).

    sha256, not blake2b: CPUs with SHA extensions hash it several times
    faster, and a restore hashes the whole state before its first token.
    """
    segments = [payload[i: i + _SEGMENT_BYTES] for i in range(0, len(payload), _SEGMENT_BYTES)]
    root = hashlib.sha256(struct.pack("<Q", len(payload)))
    for leaf in _digest_pool().map(lambda segment: hashlib.sha256(segment).digest(), segments):
        root.update(leaf)
    return root.digest()


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n
