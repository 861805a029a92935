"""Helpers shared by the ops/bench scripts: a free port, a process's memory,
a directory's size on disk."""

import os
import socket


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_of(pid):
    """{"VmRSS": bytes, "VmHWM": bytes} of a live process, else {}."""
    try:
        with open("/proc/%d/status" % pid) as f:
            return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f
                    if line.startswith(("VmRSS:", "VmHWM:"))}
    except OSError:
        return {}


def dir_bytes_by_kind(path):
    """{kind: bytes on disk (allocated blocks, as du)} of the files under
    `path`, by kind: RocksDB's blob files, tables and WAL, and the rest."""
    kinds = {".blob": "blob", ".sst": "sst", ".log": "wal"}
    total = {}
    for root, _, files in os.walk(path):
        for name in files:
            kind = kinds.get(os.path.splitext(name)[1], "other")
            try:
                total[kind] = total.get(kind, 0) + os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def dir_bytes(path):
    """Bytes the files under `path` take on disk (allocated blocks, as du)."""
    return sum(dir_bytes_by_kind(path).values())

