"""kvtier.sglang: SGLang HiCache's storage tier (HiCacheStorage) in a kvtier store.

    python -m sglang.launch_server --model-path MODEL --enable-hierarchical-cache \\
        --hicache-storage-backend dynamic --hicache-storage-backend-extra-config '{
          "backend_name": "kvtier", "module_path": "kvtier.sglang",
          "class_name": "KvtierStorage", "target": "10.0.0.5:50051",
          "token_file": "/run/kvtier/token", "layer_num": 32,
          "layout": {"page_size": 64, "n_kv_heads": 8, "head_dim": 128, "dtype": "bf16"}}'

or, outside SGLang, ``KvtierStorage(target=..., layout=kvtier.PageLayout(...),
layer_num=...)``. When ``sglang`` imports, :class:`KvtierStorage` subclasses
its ``HiCacheStorage``; otherwise a stand-in with the same abstract methods.
It implements the per-key methods (get, batch_get, set, batch_set, exists,
batch_exists, get_stats), which SGLang's generic page I/O calls; the
zero-copy v1/v2 batch methods keep the base class's behaviour.

What a HiCache page is: one flat buffer per key holding K and V of every
layer of this rank for ``page_size`` tokens, in SGLang's host layout. Here it
must be exactly ``page_bytes = layer_num * layout.page_bytes`` bytes, and it is
stored as ``layer_num`` kvtier pages: slice i (bytes [i, i+1) x
layout.page_bytes) under PageKey (page_hash(key), i). For an MHA model
``layout`` is one layer's page (page_size, KV heads per rank, head_dim,
dtype) and ``layer_num`` its layer count; the slices hold SGLang's bytes as
they are (its host layouts interleave layers), which kvtier keeps opaque.

Keys. SGLang's keys are strings (hex hashes of page token chains). Each maps
to ``blake2b(namespace + "\\0" + key, digest_size=16)``; the namespace
(``namespace`` option) defaults to "sglang", the layout, layer_num, and from
SGLang's storage config the model name and, unless the model is MLA (whose
ranks hold the same bytes), the TP rank, plus PP and CP ranks when used;
ranks thus never read each other's slices. Tenancy comes from the
credential (token), not from the namespace.

Errors. Every failure raises: kvtier.StoreError (``code`` as the status
name; UNAVAILABLE when the store is down) or ValueError (a buffer that is not
one page of this storage, a key holding a page of another size). Nothing
returns None or False for a failure. The one None is HiCache's documented
miss: ``get``/``batch_get`` return None for a key whose pages are not all
stored -- never written, evicted, or reported lost by the store (counted in
``get_stats()["lost"]``): HiCache answers a miss by recomputing, which is all
a caller can do about those, and a raise would also fail the batch's other
pages. A miss may leave its target partly written. ``set``/``batch_set``
return True (stored now or before) or raise.

Thread-safe: SGLang calls from its prefetch and backup threads; the client
is thread-safe and the counters are under a lock.
"""

from __future__ import annotations

import abc
import hashlib
import threading
from typing import Any, Sequence

import numpy as np

import kvtier

__all__ = ["HiCacheStorage", "KvtierStorage"]

try:
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorage  # type: ignore
    HAVE_SGLANG = True
except ImportError:
    HAVE_SGLANG = False

    class HiCacheStorage(abc.ABC):  # type: ignore[no-redef]
        """Stand-in for SGLang's base class: its abstract methods and defaults."""

        def register_mem_pool_host(self, mem_pool_host: Any) -> None:
            self.mem_pool_host = mem_pool_host

        @abc.abstractmethod
        def get(self, key, target_location=None, target_sizes=None): ...

        @abc.abstractmethod
        def batch_get(self, keys, target_locations=None, target_sizes=None): ...

        @abc.abstractmethod
        def set(self, key, value=None, target_location=None, target_sizes=None): ...

        @abc.abstractmethod
        def batch_set(self, keys, values=None, target_locations=None, target_sizes=None): ...

        @abc.abstractmethod
        def exists(self, key): ...

        def batch_exists(self, keys, extra_info=None) -> int:
            for i, key in enumerate(keys):
                if not self.exists(key):
                    return i
            return len(keys)

        def clear(self) -> None:
            pass

        def get_stats(self):
            return None

# Options (keyword arguments, or keys of SGLang's extra_config): (types, default).
# extra_config also carries SGLang's own keys, so other keys are ignored.
_OPTIONS: dict[str, tuple[Any, Any]] = {
    "target": (str, None),                      # host:port of kvtier-server; required
    "layout": ((dict, kvtier.PageLayout), None),  # one slice of a page; required
    "layer_num": (int, 1),                      # slices per page
    "namespace": (str, None),                   # default: see the module doc
    **kvtier.CLIENT_OPTIONS,
    "deadline_ms": (int, 10000),
    "max_attempts": (int, 4),
}


class KvtierStorage(HiCacheStorage):
    """HiCache pages in a kvtier store (see the module doc).

    ``storage_config`` is SGLang's HiCacheStorageConfig (or None); its
    ``extra_config`` supplies options, which keyword ``options`` override.
    ``kwargs`` is the dict SGLang's factory passes; nothing in it is used.
    Raises ValueError for missing or malformed options.
    """

    def __init__(self, storage_config: Any = None, kwargs: dict | None = None,
                 **options: Any) -> None:
        merged = dict(getattr(storage_config, "extra_config", None) or {})
        merged.update(options)
        opts = _parse_options(merged)
        self.layout = _layout(opts["layout"])
        self.layer_num: int = opts["layer_num"]
        self.page_bytes: int = self.layer_num * self.layout.page_bytes
        self.namespace: str = (opts["namespace"] if opts["namespace"] is not None
                               else _default_namespace(storage_config, self.layout,
                                                       self.layer_num))
        if "\0" in self.namespace:
            raise ValueError("kvtier.sglang: namespace must not contain NUL")
        self._client = kvtier.StoreClient(
            opts["target"], deadline_ms=opts["deadline_ms"], max_attempts=opts["max_attempts"],
            tls=opts["tls"], tls_ca_file=opts["tls_ca_file"],
            tls_cert_file=opts["tls_cert_file"], tls_key_file=opts["tls_key_file"],
            tls_server_name=opts["tls_server_name"], token=opts["token"],
            token_file=opts["token_file"])
        self._lock = threading.Lock()
        self._stats = {"hits": 0, "misses": 0, "lost": 0, "stored": 0, "already_stored": 0}

    def page_hash(self, key: str) -> bytes:
        """The 16-byte kvtier hash of SGLang key ``key`` in this namespace."""
        data = self.namespace.encode() + b"\0" + key.encode()
        return hashlib.blake2b(data, digest_size=16).digest()

    def get(self, key: str, target_location: Any = None,
            target_sizes: Any = None) -> Any | None:
        """The page of ``key`` in ``target_location`` (returned), or None on a miss.

        Without a target, a new uint8 array of ``page_bytes`` is returned.
        """
        targets = None if target_location is None else [target_location]
        sizes = [target_sizes] if isinstance(target_sizes, int) else target_sizes
        return self.batch_get([key], targets, sizes)[0]

    def batch_get(self, keys: Sequence[str], target_locations: Sequence[Any] | None = None,
                  target_sizes: Sequence[int] | None = None) -> list[Any | None]:
        """One result per key: its target holding the page, or None on a miss."""
        self._check_sizes(target_sizes, len(keys))
        if target_locations is None:
            target_locations = [None] * len(keys)
        if len(target_locations) != len(keys):
            raise ValueError(f"kvtier.sglang: {len(keys)} keys but "
                             f"{len(target_locations)} target_locations")
        if not keys:
            return []
        results = [np.empty(self.page_bytes, np.uint8) if target is None else target
                   for target in target_locations]
        slices = [row for i, result in enumerate(results)
                  for row in self._slices(result, True, f"target_locations[{i}]")]
        statuses = self._client.get_pages(self._page_keys(keys), slices)
        per_key = [statuses[i * self.layer_num:(i + 1) * self.layer_num]
                   for i in range(len(keys))]
        for key, status in zip(keys, per_key):
            if "size_mismatch" in status:
                raise ValueError(f"kvtier.sglang: key {key!r} holds pages that are not "
                                 f"{self.layout.page_bytes} bytes (another layout in "
                                 f"namespace {self.namespace!r}?)")
        hits = [all(s == "ok" for s in status) for status in per_key]
        with self._lock:
            self._stats["hits"] += sum(hits)
            self._stats["misses"] += len(hits) - sum(hits)
            self._stats["lost"] += sum("lost" in status for status in per_key)
        return [result if hit else None for result, hit in zip(results, hits)]

    def set(self, key: str, value: Any = None, target_location: Any = None,
            target_sizes: Any = None) -> bool:
        """Stores ``value`` (or ``target_location``) under ``key``: True, or raises."""
        sizes = [target_sizes] if isinstance(target_sizes, int) else target_sizes
        return self.batch_set([key], None if value is None else [value],
                              None if target_location is None else [target_location], sizes)

    def batch_set(self, keys: Sequence[str], values: Sequence[Any] | None = None,
                  target_locations: Sequence[Any] | None = None,
                  target_sizes: Sequence[int] | None = None) -> bool:
        """Stores each page (``values``, else ``target_locations``): True, or raises.

        A key given twice is stored once, with its first page.
        """
        sources = values if values is not None else target_locations
        if sources is None:
            raise ValueError("kvtier.sglang: batch_set without values or target_locations")
        if len(sources) != len(keys):
            raise ValueError(f"kvtier.sglang: {len(keys)} keys but {len(sources)} values")
        self._check_sizes(target_sizes, len(keys))
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        if not first:
            return True
        slices = [row for i in first.values()
                  for row in self._slices(sources[i], False, f"values[{i}]")]
        present = self._client.put_pages(self._page_keys(list(first)), self.layout, slices)
        already = sum(all(present[i * self.layer_num:(i + 1) * self.layer_num])
                      for i in range(len(first)))
        with self._lock:
            self._stats["already_stored"] += already
            self._stats["stored"] += len(first) - already
        return True

    def exists(self, key: str) -> bool:
        """Whether every slice of ``key``'s page is stored."""
        return self.batch_exists([key]) == 1

    def batch_exists(self, keys: Sequence[str], extra_info: Any = None) -> int:
        """How many leading keys have every slice stored (a gap ends the count)."""
        chain = [self.page_hash(key) for key in keys]
        return self._client.lookup_prefix(chain, 0, self.layer_num)

    def get_stats(self) -> dict[str, int]:
        """Counters since construction, in pages (HiCache pages, not slices).

        hits, misses: gets that returned a page / None. lost: misses with a
        slice the store reported lost. stored, already_stored: pages set that
        the store did not / did hold. A plain dict, not SGLang's StorageMetrics.
        """
        with self._lock:
            return dict(self._stats)

    def _page_keys(self, keys: Sequence[str]) -> list[tuple[bytes, int]]:
        return [(self.page_hash(key), layer) for key in keys for layer in range(self.layer_num)]

    def _slices(self, page: Any, writable: bool, what: str) -> np.ndarray:
        """[layer_num, layout.page_bytes] uint8 view of one page, no copy; or ValueError."""
        try:
            viewed = kvtier.page_view(page, writable)
        except TypeError as error:
            raise ValueError(f"kvtier.sglang: {what}: {error}") from error
        array = viewed if isinstance(viewed, np.ndarray) else np.frombuffer(viewed, np.uint8)
        if not array.flags.c_contiguous:
            raise ValueError(f"kvtier.sglang: {what} is not C-contiguous")
        if writable and not array.flags.writeable:
            raise ValueError(f"kvtier.sglang: {what} is read-only")
        if array.nbytes != self.page_bytes:
            raise ValueError(f"kvtier.sglang: {what} is {array.nbytes} bytes, but a page is "
                             f"{self.page_bytes} ({self.layer_num} x {self.layout})")
        return array.reshape(-1).view(np.uint8).reshape(self.layer_num, -1)

    def _check_sizes(self, target_sizes: Sequence[int] | None, count: int) -> None:
        if target_sizes is None:
            return
        sizes = list(target_sizes)
        if len(sizes) != count or any(int(size) != self.page_bytes for size in sizes):
            raise ValueError(f"kvtier.sglang: target_sizes {sizes}: {count} sizes of "
                             f"{self.page_bytes} bytes expected")


def _parse_options(given: dict[str, Any]) -> dict[str, Any]:
    options = {}
    for name, (kinds, default) in _OPTIONS.items():
        value = given.get(name, default)
        if value is not None and not isinstance(value, kinds):
            raise ValueError(f"kvtier.sglang: option {name} has the wrong type: {value!r}")
        options[name] = value
    for required in ("target", "layout"):
        if not options[required]:
            raise ValueError(f"kvtier.sglang: option {required!r} is required")
    if options["layer_num"] < 1:
        raise ValueError(f"kvtier.sglang: layer_num must be >= 1, not {options['layer_num']}")
    return options


def _layout(value: dict | kvtier.PageLayout) -> kvtier.PageLayout:
    if isinstance(value, kvtier.PageLayout):
        return value
    try:
        return kvtier.PageLayout(**value)
    except (TypeError, kvtier.StoreError) as error:
        raise ValueError(f"kvtier.sglang: layout {value}: {error}") from error


def _default_namespace(storage_config: Any, layout: kvtier.PageLayout, layer_num: int) -> str:
    parts = ["sglang", f"{layout.page_size}x{layout.n_kv_heads}x{layout.head_dim}"
             f":{layout.dtype}", f"layers={layer_num}"]
    if storage_config is not None:
        parts.append(f"model={storage_config.model_name or ''}")
        if not storage_config.is_mla_model:
            parts.append(f"tp={storage_config.tp_rank}/{storage_config.tp_size}")
        if storage_config.pp_size > 1:
            parts.append(f"pp={storage_config.pp_rank}/{storage_config.pp_size}")
        if getattr(storage_config, "attn_cp_size", 1) > 1:
            parts.append(f"cp={storage_config.attn_cp_rank}/{storage_config.attn_cp_size}")
    return "|".join(parts)
