"""A kvtier-server with its /metrics endpoint, as a one-member cluster on
loopback (so the cluster and replication families exist), for the
monitoring check and the panel renderer.

    with MetricsNode(server_binary, ram_bytes=8 << 20) as node:
        node.target          # host:port of its gRPC API
        node.scrape()        # /metrics as text
"""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MetricsNode:
    def __init__(self, server, ram_bytes, extra=()):
        self.server, self.ram_bytes, self.extra = server, ram_bytes, list(extra)

    def __enter__(self):
        self.work = tempfile.mkdtemp(prefix="kvtier-metrics-")
        port = free_port()
        self.target = f"127.0.0.1:{port}"
        log_path = os.path.join(self.work, "server.log")
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(
                [self.server, f"--listen={self.target}", f"--data_dir={self.work}/data",
                 f"--ram_bytes={self.ram_bytes}", "--noucx", "--metrics_listen=127.0.0.1:0",
                 "--node_id=n1", f"--static_members=n1={self.target}"] + self.extra,
                stderr=log)
        try:
            for _ in range(300):
                text = open(log_path).read()
                m = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", text)
                if m:
                    self.metrics_port = int(m.group(1))
                    return self
                if self.proc.poll() is not None:
                    raise RuntimeError("kvtier-server exited:\n" + text)
                time.sleep(0.1)
            raise RuntimeError("no metrics endpoint in the log:\n" + open(log_path).read())
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def scrape(self):
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                      timeout=10).read().decode()

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.work, ignore_errors=True)
