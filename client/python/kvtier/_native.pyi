"""Type stubs of kvtier._native (client/python/kvtier_module.cc)."""
from collections.abc import Sequence
from typing import Literal

from typing_extensions import Buffer

Key = tuple[bytes, int]  # (16-byte chain hash, layer)
PageStatus = Literal["ok", "not_found", "lost", "unspecified"]
Tier = Literal["ram", "disk", "none"]

class StoreError(RuntimeError):
    """A failed call; ``code`` is the status code's name ("NOT_FOUND", ...)."""

    code: str

class PageLayout:
    """The shape of one KV page: K [page_size][n_kv_heads][head_dim], then V."""

    def __init__(self, page_size: int, n_kv_heads: int, head_dim: int,
                 dtype: Literal["f32", "f16", "bf16", "fp8_e4m3", "int8"] = "f16") -> None: ...
    @property
    def page_size(self) -> int: ...
    @property
    def n_kv_heads(self) -> int: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def page_bytes(self) -> int: ...

def chain_seed(tenant_salt: bytes, model_fingerprint: bytes, layout: PageLayout) -> bytes:
    """h_{-1} of the key chain (16 bytes)."""

def chain_hashes(seed: bytes, tokens: Sequence[int], page_size: int) -> list[bytes]:
    """h_0, h_1, ... of every full page of ``tokens`` (16 bytes each)."""

class StoreClient:
    def __init__(self, target: str, deadline_ms: int = 30000, max_attempts: int = 4,
                 tls: bool = False, tls_ca_file: str = "", tls_cert_file: str = "",
                 tls_key_file: str = "", tls_server_name: str = "", token: str = "",
                 token_file: str = "", shared_namespace: bool = False) -> None: ...
    def put_pages(self, keys: Sequence[Key], layout: PageLayout,
                  pages: Sequence[Buffer]) -> list[bool]: ...
    def get_pages(self, keys: Sequence[Key], out: Sequence[Buffer]
                  ) -> list[Literal["ok", "not_found", "lost", "size_mismatch"]]: ...
    def batch_put(self, pages: Sequence[tuple[bytes, int, PageLayout, bytes]]) -> list[bool]: ...
    def batch_get(self, keys: Sequence[Key]) -> list[tuple[PageStatus, Tier, bytes | None]]: ...
    def lookup(self, chain: Sequence[bytes], layer_begin: int = 0,
               layer_count: int = 1) -> tuple[int, list[Tier]]: ...
    def delete(self, keys: Sequence[Key], force: bool = False) -> int: ...
    def pin(self, keys: Sequence[Key], ttl_ms: int, pin_id: bytes = b"") -> bytes: ...
    def unpin(self, pin_id: bytes) -> None: ...
    def stats(self) -> dict[str, int | dict[str, int]]: ...
