"""The client side of ops/bench/soak.py: key spaces, page bytes, and one
client process doing a random mix of store operations.

Each client process runs client_main; it reports counts and errors through
the driver's queue, and stops the run (a "fatal" message) on wrong bytes, a
pinned page gone, or a bug of its own. Standard library and the kvtier
binding only.
"""

import collections
import hashlib
import os
import random
import time
import traceback

LAYERS = 4             # key i of a space is (position i // 4, layer i % 4)
OWN_KEYS = 2048        # keys of each client's own space
SHARED_KEYS = 4096     # keys of the space all clients share
BLOCK_BYTES = 4 << 20  # page bodies are windows of one seeded random block
PIN_MARGIN_S = 3.0     # a pin counts as live until this long before its TTL ends
MAX_TTL_MS = 10000
QUARANTINE_S = 10.0    # UcxDataPlane::Options::released_slot_quarantine (no flag)
PUT_BATCHES = [1, 1, 2, 4, 8, 16, 32, 64, 72]
GET_BATCHES = [1, 2, 8, 16, 64, 128]
EXPECTED = {  # error codes counted, not failed, by operation
    "put": {"RESOURCE_EXHAUSTED", "ABORTED"},
    "get": {"RESOURCE_EXHAUSTED"},
    "get.page": {"NOT_FOUND"},
    "delete": {"FAILED_PRECONDITION"},
    "pin": {"NOT_FOUND", "RESOURCE_EXHAUSTED"},
    "extend": {"NOT_FOUND", "RESOURCE_EXHAUSTED"},
    "unpin": {"NOT_FOUND"},
}


class KeySpace:
    """`size` keys named `name`; the same in every process."""

    def __init__(self, seed, name, size):
        self.hashes = [hashlib.blake2b(b"kvtier-soak/%d/%s/%d" % (seed, name.encode(), p),
                                       digest_size=16).digest() for p in range(size // LAYERS)]

    def key(self, i):
        return (self.hashes[i // LAYERS], i % LAYERS)


class Pages:
    """A page's bytes are a function of its key: any process can check any page."""

    def __init__(self, seed, page_bytes):
        self.n = page_bytes
        self.block = random.Random(seed).randbytes(BLOCK_BYTES + page_bytes)

    def page(self, h, layer):
        off = int.from_bytes(h[8:16], "little") % BLOCK_BYTES
        head = h + layer.to_bytes(4, "little") + b"kvtiersoak.."  # 32 bytes
        return head + self.block[off:off + self.n - len(head)]

    def mismatch(self, h, layer, got):
        want = self.page(h, layer)
        if len(got) != len(want):
            return "%d bytes, expected %d" % (len(got), len(want))
        diff = [i for i in range(len(got)) if got[i] != want[i]]
        return "%d bytes differ from byte %d; its header names %s layer %d" % (
            len(diff), diff[0], got[:16].hex(), int.from_bytes(got[16:20], "little"))


# ---------------------------------------------------------------------------
# One client process.

class Fatal(Exception):
    pass


def client_main(cfg, cid, queue, stop):
    log = os.open(os.path.join(cfg["run_dir"], "client%d.log" % cid),
                  os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 2)  # the client library's log lines go there
    if cid in cfg["inline"]:
        os.environ["UCX_TLS"] = "tcp"  # the server's UCX is ^tcp: no data plane, bytes inline
    try:
        Client(cfg, cid, queue, stop).run()
    except BaseException:  # a bug of this script, or Ctrl-C
        queue.put(("fatal", cid, "client %d crashed:\n%s" % (cid, traceback.format_exc())))
        stop.set()


class Client:
    def __init__(self, cfg, cid, queue, stop):
        import kvtier
        self.kvtier, self.cfg, self.cid, self.queue, self.stop = kvtier, cfg, cid, queue, stop
        self.rng = random.Random(cfg["seed"] * 1000 + cid)
        self.own = KeySpace(cfg["seed"], "c%d" % cid, OWN_KEYS)
        self.shared = KeySpace(cfg["seed"], "shared", SHARED_KEYS)
        self.pages = Pages(cfg["seed"], cfg["page_bytes"])
        # 16 tokens x heads x 128 dims x f16 x (K, V) = 8 KiB per head.
        self.layout = kvtier.PageLayout(page_size=16, n_kv_heads=cfg["page_bytes"] // 8192,
                                        head_dim=128, dtype="f16")
        self.ops = collections.Counter()
        self.counts = collections.Counter()  # pages
        self.errors = collections.Counter()  # "op:CODE"
        self.own_put = set()                 # own indices put and not since gone
        self.recent = collections.deque(maxlen=256)
        self.cursor = 0
        self.pins = {}                       # pin id (bytes) -> {"keys": set, "expiry": monotonic}
        self.client = None

    def connect(self):
        self.client = None  # the old one closes its channel (and data plane) first
        self.client = self.kvtier.StoreClient(self.cfg["target"], deadline_ms=30000)

    def call(self, op, fn, *args):
        """(fn(*args), None), or (None, code) after counting op:code."""
        self.ops[op] += 1
        try:
            return fn(*args), None
        except self.kvtier.StoreError as e:
            self.errors["%s:%s" % (op, e.code)] += 1
            return None, e.code

    def violation(self, msg):
        self.queue.put(("fatal", self.cid, "client %d: %s" % (self.cid, msg)))
        self.stop.set()
        raise Fatal(msg)

    def pick_own(self, n):
        pool = list(self.recent if self.recent and self.rng.random() < 0.6 else self.own_put)
        return list(dict.fromkeys(self.rng.sample(pool, min(n, len(pool)))))

    def random_shared(self, n):
        return list(dict.fromkeys(self.shared.key(self.rng.randrange(SHARED_KEYS))
                                  for _ in range(n)))

    def op_put(self):
        n = self.rng.choice(PUT_BATCHES)
        items = {}
        sequential = self.rng.random() < 0.6  # the next n own keys, else random ones
        for _ in range(n):
            if sequential:
                items[("own", self.cursor)] = None
                self.cursor = (self.cursor + 1) % OWN_KEYS
            elif self.rng.random() < 0.5:
                items[("own", self.rng.randrange(OWN_KEYS))] = None
            else:
                items[("shared", self.rng.randrange(SHARED_KEYS))] = None
        pages = []
        for space, i in items:
            h, layer = (self.own if space == "own" else self.shared).key(i)
            pages.append((h, layer, self.layout, self.pages.page(h, layer)))
        present, _ = self.call("put", self.client.batch_put, pages)
        if present is None:
            return
        self.counts["put_new"] += present.count(False)
        self.counts["put_dup"] += present.count(True)
        for space, i in items:
            if space == "own":
                self.own_put.add(i)
                self.recent.append(i)

    def op_get(self):
        n = self.rng.choice(GET_BATCHES)
        keys = {self.own.key(i): ("own", i) for i in self.pick_own(n - n // 4)}
        for _ in range(n // 4 or (0 if keys else 1)):
            i = self.rng.randrange(SHARED_KEYS)
            keys[self.shared.key(i)] = ("shared", i)
        sent = time.monotonic()
        got, _ = self.call("get", self.client.batch_get, list(keys))
        if got is None:
            return
        if len(got) != len(keys):
            self.violation("batch_get of %d keys returned %d pages" % (len(keys), len(got)))
        for ((h, layer), (space, i)), (status, tier, data) in zip(keys.items(), got):
            name = "%s key %d (%s layer %d)" % (space, i, h.hex(), layer)
            if status == "ok":
                if data != self.pages.page(h, layer):
                    self.violation("WRONG BYTES for %s from %s: %s"
                                   % (name, tier, self.pages.mismatch(h, layer, data)))
                self.counts["get_" + tier] += 1
                continue
            self.errors["get.page:" + status.upper()] += 1
            if status == "not_found":
                self.counts["get_not_found"] += 1
                for pin_id, pin in self.pins.items():
                    if (h, layer) in pin["keys"] and pin["expiry"] - sent > PIN_MARGIN_S:
                        self.violation("pinned page %s NOT_FOUND; pin %s has %.1f s to live"
                                       % (name, pin_id.hex(), pin["expiry"] - sent))
            if space == "own":
                self.own_put.discard(i)

    def op_lookup(self):
        space = self.own if self.rng.random() < 0.7 else self.shared
        positions = len(space.hashes)
        begin, n = self.rng.randrange(positions), min(self.rng.choice([1, 8, 64, 256]), positions)
        chain = [space.hashes[(begin + j) % positions] for j in range(n)]
        layers = self.rng.choice([1, LAYERS])
        res, _ = self.call("lookup", self.client.lookup, chain, 0, layers)
        if res is not None and len(res[1]) != n * layers:
            self.violation("lookup of %d x %d returned %d tiers" % (n, layers, len(res[1])))

    def op_delete(self):
        if self.rng.random() < 0.25:  # shared keys, never forced: others' pins must hold
            own, keys, force = [], self.random_shared(self.rng.randint(1, 4)), False
        else:
            own = self.pick_own(self.rng.randint(1, 8))
            keys, force = [self.own.key(i) for i in own], self.rng.random() < 0.3
            if not keys:
                return
        n, _ = self.call("delete", self.client.delete, keys, force)
        if n is None:
            return
        self.counts["deleted"] += n
        self.own_put.difference_update(own)
        if force:
            for pin in self.pins.values():
                pin["keys"].difference_update(keys)

    def op_pin(self):
        if self.pins and (len(self.pins) >= 8 or self.rng.random() < 0.3):
            return self.op_extend()
        keys = [self.own.key(i) for i in self.pick_own(self.rng.randint(1, 12))]
        keys = list(dict.fromkeys(keys + self.random_shared(self.rng.randint(0, 4))))
        if not keys:
            return
        ttl, sent = self.rng.randint(500, MAX_TTL_MS), time.monotonic()
        pin_id, _ = self.call("pin", self.client.pin, keys, ttl)
        if pin_id is not None:
            self.pins[pin_id] = {"keys": set(keys), "expiry": sent + ttl / 1000}

    def op_extend(self):
        pin_id = self.rng.choice(list(self.pins))
        pin = self.pins[pin_id]
        keys = [self.own.key(i) for i in self.pick_own(4)] if self.rng.random() < 0.6 else []
        ttl, sent = self.rng.randint(500, MAX_TTL_MS), time.monotonic()
        res, code = self.call("extend", self.client.pin, keys, ttl, pin_id)
        if res is not None:
            pin["keys"].update(keys)
            pin["expiry"] = sent + ttl / 1000
        elif code == "NOT_FOUND" and not keys:  # the pin is unknown or expired
            if pin["expiry"] - sent > PIN_MARGIN_S:
                self.violation("extending pin %s: NOT_FOUND with %.1f s to live"
                               % (pin_id.hex(), pin["expiry"] - sent))
            del self.pins[pin_id]
        elif code == "NOT_FOUND" and pin["expiry"] < sent:
            del self.pins[pin_id]

    def op_unpin(self, pin_id=None):
        if not self.pins:
            return
        if pin_id is None:
            pin_id = self.rng.choice(list(self.pins))
        pin = self.pins.pop(pin_id)
        sent = time.monotonic()
        _, code = self.call("unpin", self.client.unpin, pin_id)
        if code == "NOT_FOUND" and pin["expiry"] - sent > PIN_MARGIN_S:
            self.violation("unpin %s: NOT_FOUND with %.1f s to live"
                           % (pin_id.hex(), pin["expiry"] - sent))

    def op_stats(self):
        self.call("stats", self.client.stats)

    def snapshot(self):
        return {"ops": dict(self.ops), "counts": dict(self.counts), "errors": dict(self.errors)}

    def run(self):
        fns, weights = zip((self.op_put, 30), (self.op_get, 30), (self.op_lookup, 12),
                           (self.op_delete, 6), (self.op_pin, 10), (self.op_unpin, 7),
                           (self.op_stats, 3))
        self.connect()
        next_reconnect = time.monotonic() + self.rng.uniform(5, 20)
        next_report = time.monotonic() + 1
        try:
            while not self.stop.is_set() and time.monotonic() < self.cfg["deadline"]:
                self.rng.choices(fns, weights)[0]()
                now = time.monotonic()
                if self.cid % 2 == 1 and now >= next_reconnect:
                    self.connect()
                    self.ops["reconnect"] += 1
                    next_reconnect = now + self.rng.uniform(5, 20)
                if now >= next_report:
                    self.queue.put(("snap", self.cid, self.snapshot()))
                    next_report = now + 1
            for pin_id in list(self.pins):
                self.op_unpin(pin_id)
        except Fatal:
            pass
        self.queue.put(("done", self.cid, self.snapshot()))
