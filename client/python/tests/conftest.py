"""Fixtures of the Python suites: real kvtier-servers on loopback.

KVTIER_SERVER names the kvtier-server binary (CTest sets it; by hand:
KVTIER_SERVER=build/bin/kvtier-server PYTHONPATH=build/python pytest client/python/tests).
"""
import os
import subprocess
import tempfile
import time

import pytest


class Server:
    """One kvtier-server on a free loopback port, its data in a temporary directory."""

    def __init__(self, *extra, ram_bytes=64 << 20, disk_bytes=256 << 20):
        binary = os.environ.get("KVTIER_SERVER")
        if not binary:
            raise RuntimeError("KVTIER_SERVER must name the kvtier-server binary")
        self.dir = tempfile.TemporaryDirectory()
        port_file = os.path.join(self.dir.name, "port")
        self.log = open(os.path.join(self.dir.name, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--port_file", port_file,
             "--data_dir", os.path.join(self.dir.name, "data"), "--ram_bytes", str(ram_bytes),
             "--disk_bytes", str(disk_bytes), *extra],
            stderr=self.log)
        deadline = time.monotonic() + 30
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("kvtier-server did not start")
            time.sleep(0.05)
        self.target = "127.0.0.1:" + open(port_file).read().strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()
        self.dir.cleanup()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def fresh_server():
    s = Server()
    yield s
    s.stop()
