"""put_pages / get_pages: pages from and into caller buffers, and bad buffers refused."""
import numpy as np
import pytest

import kvtier

LAYOUT = kvtier.PageLayout(page_size=4, n_kv_heads=2, head_dim=8, dtype="f32")  # 512 bytes


def keys_for(name, n, layer=0):
    seed = kvtier.chain_seed(b"zero-copy", name.encode(), LAYOUT)
    chain = kvtier.chain_hashes(seed, list(range(n * LAYOUT.page_size)), LAYOUT.page_size)
    return [(h, layer) for h in chain]


def pages(n, salt):
    rng = np.random.default_rng(salt)
    return rng.integers(0, 256, size=(n, LAYOUT.page_bytes), dtype=np.uint8)


class DlpackOnly:
    """A tensor that exports DLPack but not the buffer protocol (as torch's do)."""

    def __init__(self, array, device=(1, 0)):
        self.array = array
        self.device = device

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.device


@pytest.fixture(scope="module")
def client(server):
    return kvtier.StoreClient(server.target, deadline_ms=10000)


def test_rows_of_one_array_round_trip(client):
    keys = keys_for("rows", 5)
    data = pages(5, 1)
    assert client.put_pages(keys, LAYOUT, data) == [False] * 5
    assert client.put_pages(keys[:2], LAYOUT, data[:2]) == [True, True]
    out = np.zeros_like(data)
    assert client.get_pages(keys, out) == ["ok"] * 5
    np.testing.assert_array_equal(out, data)


def test_rows_of_a_strided_array_and_one_flat_buffer(client):
    keys = keys_for("strided", 3)
    data = pages(6, 8)[::2]  # every other row: rows contiguous, the array not
    client.put_pages(keys, LAYOUT, data)
    flat = bytearray(3 * LAYOUT.page_bytes)  # one buffer, cut into three pages
    assert client.get_pages(keys, flat) == ["ok"] * 3
    assert bytes(flat) == data.tobytes()
    with pytest.raises(kvtier.StoreError, match="does not split into 2 pages") as caught:
        client.get_pages(keys[:2], bytearray(LAYOUT.page_bytes + 1))
    assert caught.value.code == "INVALID_ARGUMENT"


def test_every_buffer_kind_goes_in_and_out(client):
    keys = keys_for("kinds", 4)
    data = pages(4, 2)
    sources = [bytes(data[0]), bytearray(data[1]), memoryview(data[2]),
               data[3].view(np.float32)]  # any dtype: the bytes are what count
    client.put_pages(keys, LAYOUT, sources)
    backing = np.zeros((4, LAYOUT.page_bytes), np.uint8)
    outs = [bytearray(LAYOUT.page_bytes), memoryview(backing[1]), backing[2],
            backing[3].view(np.float32)]
    assert client.get_pages(keys, outs) == ["ok"] * 4
    assert outs[0] == bytes(data[0])
    np.testing.assert_array_equal(backing[1:], data[1:])  # written into the caller's memory


def test_dlpack_tensors_are_viewed_not_copied(client):
    keys = keys_for("dlpack", 2)
    data = pages(2, 3)
    client.put_pages(keys, LAYOUT, [DlpackOnly(data[0]), DlpackOnly(data[1])])
    out = np.zeros_like(data)
    assert client.get_pages(keys, [DlpackOnly(out[0]), DlpackOnly(out[1])]) == ["ok", "ok"]
    np.testing.assert_array_equal(out, data)


def test_missing_and_mismatched_pages_leave_their_buffers_alone(client):
    stored, missing = keys_for("partial", 2)
    data = pages(1, 4)
    client.put_pages([stored], LAYOUT, data)
    out = np.full((2, LAYOUT.page_bytes), 7, np.uint8)
    assert client.get_pages([stored, missing], out) == ["ok", "not_found"]
    np.testing.assert_array_equal(out[0], data[0])
    assert (out[1] == 7).all()
    short = bytearray(b"\x09" * (LAYOUT.page_bytes - 4))
    assert client.get_pages([stored], [short]) == ["size_mismatch"]
    assert short == bytearray(b"\x09" * (LAYOUT.page_bytes - 4))


@pytest.mark.parametrize("bad_pages, message", [
    (lambda d: [d[0, ::2]], "C-contiguous"),                  # strided view
    (lambda d: [d[0, :-1]], "511 bytes"),                     # one byte short
    (lambda d: [d[0], d[1]], "1 keys but 2 pages"),
    (lambda d: [DlpackOnly(d[0], device=(2, 0))], "device"),  # a CUDA tensor
])
def test_bad_pages_are_refused_before_anything_is_stored(client, bad_pages, message):
    keys = keys_for("refused-" + message, 1)
    with pytest.raises(kvtier.StoreError, match=message) as caught:
        client.put_pages(keys, LAYOUT, bad_pages(pages(2, 5)))
    assert caught.value.code == "INVALID_ARGUMENT"
    assert client.lookup([keys[0][0]])[0] == 0


def test_read_only_destinations_are_refused(client):
    keys = keys_for("read-only", 1)
    client.put_pages(keys, LAYOUT, pages(1, 6))
    frozen = np.zeros(LAYOUT.page_bytes, np.uint8)
    frozen.flags.writeable = False
    for out in (bytes(LAYOUT.page_bytes), frozen):
        with pytest.raises(kvtier.StoreError, match="writable") as caught:
            client.get_pages(keys, [out])
        assert caught.value.code == "INVALID_ARGUMENT"
    assert not frozen.any()


def test_empty_batches_and_bad_keys_raise(client):
    for call in (lambda: client.put_pages([], LAYOUT, []),
                 lambda: client.get_pages([], []),
                 lambda: client.put_pages([(b"short", 0)], LAYOUT, pages(1, 7))):
        with pytest.raises(kvtier.StoreError) as caught:
            call()
        assert caught.value.code == "INVALID_ARGUMENT"
    with pytest.raises(TypeError):
        client.put_pages(keys_for("types", 1), LAYOUT, [12345])


def test_the_chain_takes_numpy_tokens():
    seed = kvtier.chain_seed(b"t", b"m", LAYOUT)
    tokens = np.arange(1000, 1012, dtype=np.int32)
    assert kvtier.chain_hashes(seed, tokens, 4) == kvtier.chain_hashes(seed, list(range(1000, 1012)), 4)
