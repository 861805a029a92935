"""kvtier: the client of a kvtier store, and the key chain every language shares.

    import numpy as np
    import kvtier

    layout = kvtier.PageLayout(page_size=16, n_kv_heads=8, head_dim=128, dtype="f16")
    seed = kvtier.chain_seed(b"tenant", b"model", layout)
    chain = kvtier.chain_hashes(seed, tokens, layout.page_size)  # 16 bytes per full page
    client = kvtier.StoreClient("127.0.0.1:50051")
    pages = np.zeros((len(chain), layout.page_bytes), np.uint8)
    client.put_pages([(h, 0) for h in chain], layout, pages)     # no copy of the pages
    prefix, tiers = client.lookup(chain)
    statuses = client.get_pages([(h, 0) for h in chain], pages)  # written in place

Pages go in and out of any C-contiguous buffer (numpy arrays, memoryview,
bytearray, bytes for puts) or any CPU tensor with ``__dlpack__`` (torch)
without a copy in Python. Errors from the store raise :class:`StoreError`,
whose ``code`` is the status code's name ("NOT_FOUND", "INVALID_ARGUMENT",
...). The key chain is computed by the same C++ code as the server's and the
C++ client's, so equal prompts give equal keys in every process and language.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kvtier import _native
from kvtier._native import (  # noqa: F401  (re-exported)
    PageLayout,
    StoreError,
    chain_hashes,
    chain_seed,
)

__all__ = ["PageLayout", "StoreClient", "StoreError", "chain_hashes", "chain_seed",
           "page_view"]


def page_view(page: Any, writable: bool = False) -> Any:
    """A C-contiguous buffer over ``page`` without copying it.

    Buffer-protocol objects are returned as they are. A tensor that is not
    one but exports DLPack (a torch tensor on the CPU) is viewed through
    numpy; a tensor on another device raises :class:`StoreError`
    (INVALID_ARGUMENT), since pages travel through host memory.
    """
    try:
        memoryview(page).release()
        return page
    except TypeError:
        pass
    if not hasattr(page, "__dlpack__"):
        raise TypeError(f"a page must be a buffer or a DLPack tensor, not {type(page).__name__}")
    device = page.__dlpack_device__() if hasattr(page, "__dlpack_device__") else (1, 0)
    if int(device[0]) != 1:  # kDLCPU
        raise _invalid(f"a page on DLPack device {tuple(device)}: only CPU memory can be sent")
    if hasattr(page, "numpy") and hasattr(page, "untyped_storage"):
        # torch: view as bytes first, so that dtypes numpy lacks (bf16, fp8)
        # and tensors that require grad still convert without a copy.
        import torch  # present: `page` is one of its tensors
        return page.detach().view(torch.uint8).numpy()
    import numpy
    array = numpy.from_dlpack(page)
    if writable and not array.flags.writeable:
        raise _invalid("a read-only DLPack tensor cannot receive pages")
    return array


def _invalid(message: str) -> StoreError:
    error = StoreError(message)
    error.code = "INVALID_ARGUMENT"
    return error


class StoreClient(_native.StoreClient):
    __doc__ = _native.StoreClient.__doc__

    def put_pages(self, keys: Sequence[tuple[bytes, int]], layout: PageLayout,
                  pages: Any) -> list[bool]:
        """Stores ``pages[i]`` under ``keys[i]`` = (hash16, layer), all of ``layout``.

        ``pages`` is a sequence of buffers or CPU tensors, each exactly
        ``layout.page_bytes`` long and C-contiguous, or one buffer or tensor
        holding all of them (a 2-D array whose rows are the pages). Nothing is copied in Python; the bytes are
        read while the call runs. Returns, per page, whether the store
        already held it. Raises StoreError (INVALID_ARGUMENT before anything
        is sent for a bad key, size or layout).
        """
        return super().put_pages(keys, layout, _pages(pages, len(keys), writable=False))

    def get_pages(self, keys: Sequence[tuple[bytes, int]], out: Any) -> list[str]:
        """Reads the pages of ``keys`` into ``out[i]`` (writable buffers or CPU tensors).

        Returns one status per key: "ok" (``out[i]`` holds the page),
        "not_found", "lost" (the store had it and lost it), or
        "size_mismatch" (the stored page is not ``len(out[i])`` bytes); only
        "ok" pages are written (a page whose transfer failed and was retried
        may have been written too). ``out`` may be one buffer or tensor cut
        into ``len(keys)`` equal pages (a 2-D array whose rows are the pages).
        """
        return super().get_pages(keys, _pages(out, len(keys), writable=True))

    def lookup_prefix(self, chain: Sequence[bytes], layer_begin: int = 0,
                      layer_count: int = 1) -> int:
        """How many leading pages of ``chain`` are stored for every layer of
        [layer_begin, layer_begin + layer_count): ``lookup`` over a chain of
        any length, in requests within the server's default limits, stopping
        at the first gap."""
        step = max(1, min(_MAX_LOOKUP_PAGES, _MAX_LOOKUP_ENTRIES // max(1, layer_count)))
        prefix_pages = 0
        for begin in range(0, len(chain), step):
            part = chain[begin:begin + step]
            found, _tiers = self.lookup(part, layer_begin, layer_count)
            prefix_pages += found
            if found < len(part):
                break
        return prefix_pages


# StoreClient's connection options as the adapters take them from their
# engine's configuration: name -> (type, default).
CLIENT_OPTIONS: dict[str, tuple[Any, Any]] = {
    "token": (str, ""),                # bearer token (or token_file, its first line)
    "token_file": (str, ""),
    "tls": (bool, False),
    "tls_ca_file": (str, ""),
    "tls_cert_file": (str, ""),
    "tls_key_file": (str, ""),
    "tls_server_name": (str, ""),
}

# The server's default limits on one Lookup: chain pages, and pages x layers.
_MAX_LOOKUP_PAGES = 4096
_MAX_LOOKUP_ENTRIES = 1 << 20


def _pages(pages: Any, count: int, writable: bool) -> Any:
    """One buffer (cut into ``count`` equal pages by the native code) when
    ``pages`` is one contiguous buffer or tensor; else one buffer per page."""
    if isinstance(pages, (list, tuple)):
        return [page_view(page, writable) for page in pages]
    whole = page_view(pages, writable)
    with memoryview(whole) as view:
        contiguous = view.c_contiguous
    if not contiguous and getattr(pages, "ndim", 0) >= 2 and len(pages) == count:
        return [page_view(pages[i], writable) for i in range(count)]  # strided rows
    return whole
