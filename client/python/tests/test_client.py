"""The Python binding against a real kvtier-server on loopback."""
import os
import subprocess
import sys
import tempfile
import time
import unittest

import kvtier


TLS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "testing", "tls")


class ServerFixture:
    def __init__(self, extra=()):
        self.dir = tempfile.TemporaryDirectory()
        port_file = os.path.join(self.dir.name, "port")
        self.proc = subprocess.Popen(
            [os.environ["KVTIER_SERVER"], "--listen", "127.0.0.1:0", "--port_file", port_file,
             "--data_dir", os.path.join(self.dir.name, "data"), "--ram_bytes", str(64 << 20),
             "--disk_bytes", str(256 << 20), *extra],
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kvtier-server did not start")
            time.sleep(0.05)
        self.target = "127.0.0.1:" + open(port_file).read().strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.dir.cleanup()


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = ServerFixture()
        cls.client = kvtier.StoreClient(cls.server.target, deadline_ms=10000)

    @classmethod
    def tearDownClass(cls):
        del cls.client  # closes the channel, so the server stops at once
        cls.server.stop()

    def test_chain_matches_the_specified_vectors(self):
        layout = kvtier.PageLayout(page_size=16, n_kv_heads=8, head_dim=128, dtype="f16")
        seed = kvtier.chain_seed(b"tenant-a", b"llama-3.1-8b", layout)
        self.assertEqual(seed.hex(), "0c47bae97b55d1fbd23f4cbd9c944134")
        chain = kvtier.chain_hashes(seed, list(range(1, 33)), 16)
        self.assertEqual([h.hex() for h in chain],
                         ["872f9101721802484503d21ef5bf71d7", "3ee7fd3d4e7b4c3e0a036a2ea8e80339"])

    def test_put_lookup_get_delete(self):
        layout = kvtier.PageLayout(page_size=4, n_kv_heads=2, head_dim=8, dtype="f32")
        self.assertEqual(layout.page_bytes, 2 * 4 * 2 * 8 * 4)
        seed = kvtier.chain_seed(b"py", b"model", layout)
        chain = kvtier.chain_hashes(seed, list(range(100, 112)), 4)
        pages = [bytes([i]) * layout.page_bytes for i in range(3)]
        present = self.client.batch_put(
            [(chain[i], 0, layout, pages[i]) for i in range(2)])
        self.assertEqual(present, [False, False])
        self.assertEqual(self.client.batch_put([(chain[0], 0, layout, pages[0])]), [True])
        prefix, tiers = self.client.lookup(chain)
        self.assertEqual(prefix, 2)
        self.assertEqual(tiers, ["ram", "ram", "none"])
        got = self.client.batch_get([(chain[1], 0), (chain[2], 0)])
        self.assertEqual(got[0], ("ok", "ram", pages[1]))
        self.assertEqual(got[1], ("not_found", "none", None))
        self.assertEqual(self.client.delete([(chain[0], 0), (chain[2], 0)]), 1)
        self.assertEqual(self.client.lookup(chain)[0], 0)

    def test_pins_refuse_deletion_until_released(self):
        layout = kvtier.PageLayout(page_size=4, n_kv_heads=1, head_dim=4, dtype="f16")
        seed = kvtier.chain_seed(b"py", b"pins", layout)
        (h,) = kvtier.chain_hashes(seed, [1, 2, 3, 4], 4)
        self.client.batch_put([(h, 3, layout, b"\x07" * layout.page_bytes)])
        pin = self.client.pin([(h, 3)], ttl_ms=60000)
        self.assertIsInstance(pin, bytes)
        self.assertEqual(len(pin), 16)
        other = self.client.pin([(h, 3)], ttl_ms=60000)
        self.assertNotEqual(other, pin)
        self.client.unpin(other)
        self.assertEqual(self.client.pin([], ttl_ms=60000, pin_id=pin), pin)  # extends
        with self.assertRaises(kvtier.StoreError) as err:
            self.client.delete([(h, 3)])
        self.assertEqual(err.exception.code, "FAILED_PRECONDITION")
        self.client.unpin(pin)
        with self.assertRaises(kvtier.StoreError) as err:
            self.client.unpin(pin)
        self.assertEqual(err.exception.code, "NOT_FOUND")
        self.assertEqual(self.client.delete([(h, 3)]), 1)

    def test_stats_has_every_field_of_the_reply(self):
        stats = self.client.stats()
        for name in ("put_pages", "put_duplicate_pages", "get_misses", "lost_pages",
                     "demotions", "promotions", "dropped_pages", "reserved_bytes",
                     "active_pins", "lookups", "quarantined_bytes", "unverified_disk_pages",
                     "set_aside_files"):
            self.assertIsInstance(stats[name], int, name)
        for tier in ("ram", "disk"):
            self.assertEqual(set(stats[tier]), {
                "pages", "used_bytes", "capacity_bytes", "high_watermark_bytes",
                "low_watermark_bytes", "hits", "evictions", "pinned_pages", "bytes_in",
                "bytes_out"})
        self.assertGreater(stats["ram"]["capacity_bytes"], 0)
        self.assertEqual(stats["reserved_bytes"], 0)

    def test_bad_inputs_raise_and_change_nothing(self):
        layout = kvtier.PageLayout(page_size=4, n_kv_heads=1, head_dim=4, dtype="f16")
        before = self.client.stats()["put_pages"]
        with self.assertRaises(kvtier.StoreError) as err:
            self.client.batch_put([(b"short", 0, layout, b"\x00" * layout.page_bytes)])
        self.assertEqual(err.exception.code, "INVALID_ARGUMENT")
        seed = kvtier.chain_seed(b"py", b"bad", layout)
        (h,) = kvtier.chain_hashes(seed, [9, 9, 9, 9], 4)
        with self.assertRaises(kvtier.StoreError) as err:
            self.client.batch_put([(h, 0, layout, b"\x00" * (layout.page_bytes - 1))])
        self.assertEqual(err.exception.code, "INVALID_ARGUMENT")
        with self.assertRaises(kvtier.StoreError) as err:
            kvtier.PageLayout(page_size=0, n_kv_heads=1, head_dim=4)
        self.assertEqual(err.exception.code, "INVALID_ARGUMENT")
        with self.assertRaises(kvtier.StoreError) as err:
            self.client.unpin(b"\x01" * 16)
        self.assertEqual(err.exception.code, "NOT_FOUND")
        with self.assertRaises(kvtier.StoreError) as err:
            self.client.unpin(b"")
        self.assertEqual(err.exception.code, "NOT_FOUND")
        with self.assertRaises(kvtier.StoreError) as err:
            self.client.unpin(b"short")
        self.assertEqual(err.exception.code, "INVALID_ARGUMENT")
        with self.assertRaises(TypeError):
            self.client.unpin(123456789)  # ids are bytes now
        self.assertEqual(self.client.stats()["put_pages"], before)


class TlsClientTest(unittest.TestCase):
    """The binding's TLS options against a server with mTLS."""

    @classmethod
    def setUpClass(cls):
        cls.server = ServerFixture([
            "--tls_cert_file", os.path.join(TLS_DIR, "server.pem"),
            "--tls_key_file", os.path.join(TLS_DIR, "server.key"),
            "--tls_client_ca_file", os.path.join(TLS_DIR, "ca.pem")])

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def client(self, **tls):
        return kvtier.StoreClient(self.server.target, deadline_ms=10000, max_attempts=1, **tls)

    def test_mutual_tls_round_trip(self):
        c = self.client(tls=True, tls_ca_file=os.path.join(TLS_DIR, "ca.pem"),
                        tls_cert_file=os.path.join(TLS_DIR, "client.pem"),
                        tls_key_file=os.path.join(TLS_DIR, "client.key"))
        layout = kvtier.PageLayout(page_size=4, n_kv_heads=2, head_dim=8, dtype="f32")
        key = bytes(range(16))
        c.batch_put([(key, 0, layout, b"\x07" * layout.page_bytes)])
        [(status, _tier, data)] = c.batch_get([(key, 0)])
        self.assertEqual(status, "ok")
        self.assertEqual(data, b"\x07" * layout.page_bytes)

    def test_refused_without_tls_or_a_client_certificate(self):
        for tls in ({}, {"tls": True, "tls_ca_file": os.path.join(TLS_DIR, "ca.pem")}):
            with self.assertRaises(kvtier.StoreError) as caught:
                self.client(**tls).stats()
            self.assertEqual(caught.exception.code, "UNAVAILABLE")

    def test_bad_options_raise_with_their_code(self):
        with self.assertRaises(kvtier.StoreError) as caught:
            self.client(tls_ca_file=os.path.join(TLS_DIR, "ca.pem"))  # without tls=True
        self.assertEqual(caught.exception.code, "INVALID_ARGUMENT")
        with self.assertRaises(kvtier.StoreError) as caught:
            self.client(tls=True, tls_ca_file=os.path.join(TLS_DIR, "missing.pem"))
        self.assertEqual(caught.exception.code, "NOT_FOUND")


class TokenClientTest(unittest.TestCase):
    """Bearer tokens and tenants through the binding."""

    TOKEN_A = "a" * 32
    TOKEN_B = "b" * 32

    @classmethod
    def setUpClass(cls):
        import hashlib
        cls.tmp = tempfile.TemporaryDirectory()
        access = os.path.join(cls.tmp.name, "access.txt")
        with open(access, "w") as f:
            for tenant, token in (("acme", cls.TOKEN_A), ("globex", cls.TOKEN_B)):
                digest = hashlib.sha256(token.encode()).hexdigest()
                f.write(f"tenant={tenant} role=tenant token_sha256={digest}\n")
        cls.token_file = os.path.join(cls.tmp.name, "token")
        with open(cls.token_file, "w") as f:
            f.write(cls.TOKEN_B + "\n")
        cls.server = ServerFixture(["--access_file", access])

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.tmp.cleanup()

    def client(self, **kw):
        return kvtier.StoreClient(self.server.target, deadline_ms=10000, max_attempts=1, **kw)

    def test_tenants_see_only_their_pages(self):
        layout = kvtier.PageLayout(page_size=4, n_kv_heads=2, head_dim=8, dtype="f32")
        key = bytes(range(32, 48))
        a = self.client(token=self.TOKEN_A)
        b = self.client(token_file=self.token_file)
        a.batch_put([(key, 0, layout, b"\x01" * layout.page_bytes)])
        self.assertEqual(b.batch_get([(key, 0)]), [("not_found", "none", None)])
        self.assertEqual(b.lookup([key])[0], 0)
        b.batch_put([(key, 0, layout, b"\x02" * layout.page_bytes)])
        self.assertEqual(a.batch_get([(key, 0)])[0][2], b"\x01" * layout.page_bytes)
        self.assertEqual(b.batch_get([(key, 0)])[0][2], b"\x02" * layout.page_bytes)
        pin = a.pin([(key, 0)], 60000)
        with self.assertRaises(kvtier.StoreError) as caught:
            b.unpin(pin)
        self.assertEqual(caught.exception.code, "NOT_FOUND")
        a.unpin(pin)

    def test_missing_or_wrong_tokens_are_unauthenticated(self):
        for kw in ({}, {"token": "c" * 32}):
            with self.assertRaises(kvtier.StoreError) as caught:
                self.client(**kw).lookup([bytes(16)])
            self.assertEqual(caught.exception.code, "UNAUTHENTICATED")
        with self.assertRaises(kvtier.StoreError) as caught:
            self.client(token=self.TOKEN_A).stats()  # an admin RPC
        self.assertEqual(caught.exception.code, "PERMISSION_DENIED")
        with self.assertRaises(kvtier.StoreError) as caught:
            self.client(token="short")
        self.assertEqual(caught.exception.code, "INVALID_ARGUMENT")


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
