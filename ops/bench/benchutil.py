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



def dir_bytes(path):
    """Bytes the files under `path` take on disk (allocated blocks, as du)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total

