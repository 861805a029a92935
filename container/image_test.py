"""Checks of the container image's recipe and helpers, without a Docker engine.

- The Dockerfile's build stage installs and builds through scripts/lib.sh's
  install_debian_packages and build_kvtier, which scripts/test.sh (CI) runs
  too, and names no Debian package itself; the runtime stage runs
  kvtier-server as a non-root user with a gRPC health check.
- .dockerignore keeps the build trees out and every source folder in.
- container/runtime-packages.sh finds the Debian packages of the built
  programs' libraries, and fails on a library no package holds.
- container/kvtier-health answers 0 for a serving kvtier-server (plaintext,
  and mTLS with an access file, without a token) and 1 otherwise.

Run: python3 container/image_test.py, with KVTIER_BIN_DIR (build/bin) for
the last two; ctest sets it.
"""
import fnmatch
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN_DIR = os.environ.get("KVTIER_BIN_DIR", "")
HEALTH = os.path.join(ROOT, "container", "kvtier-health")
RUNTIME_PACKAGES = os.path.join(ROOT, "container", "runtime-packages.sh")
TLS_DIR = os.path.join(ROOT, "testing", "tls")


def read(path):
    with open(path) as f:
        return f.read()


def dockerfile_stages():
    """[(from_line, [(instruction, argument)])], continuation lines joined."""
    text = re.sub(r"\\\n", " ", read(os.path.join(ROOT, "Dockerfile")))
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append((argument.strip(), []))
        else:
            stages[-1][1].append((instruction, " ".join(argument.split())))
    return stages


def shell_functions_called(script):
    """Names of lib.sh functions a script calls (first word of its commands
    and of `step "..." FUNCTION` lines)."""
    text = read(script)
    names = set(re.findall(r'^step "[^"]*" ?\\?\s*(\w+)', text, re.M))
    names |= set(re.findall(r"(?:^|&&|;)\s*(\w+)(?=\s*(?:&&|;|'|$))", text, re.M))
    return names


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stages = dockerfile_stages()

    def test_two_stages_on_bookworm(self):
        self.assertEqual([s[0] for s in self.stages], ["debian:bookworm AS build", "debian:bookworm-slim"])

    def test_build_stage_uses_the_ci_install_and_build(self):
        runs = [arg for ins, arg in self.stages[0][1] if ins == "RUN"]
        self.assertEqual(len(runs), 2)
        self.assertTrue(runs[0].startswith("bash -c 'source scripts/lib.sh && install_debian_packages'"))
        self.assertTrue(runs[1].startswith("bash -c 'source scripts/lib.sh && build_kvtier'"))
        # The package list lives in lib.sh alone.
        for run in runs:
            self.assertNotIn("apt-get install", run)
        # scripts/test.sh, which CI runs, sources the same lib.sh and calls both.
        test_sh = os.path.join(ROOT, "scripts", "test.sh")
        self.assertIn('source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"', read(test_sh))
        called = shell_functions_called(test_sh)
        self.assertLessEqual({"install_debian_packages", "build_kvtier"}, called)
        lib = read(os.path.join(ROOT, "scripts", "lib.sh"))
        for function in ("install_debian_packages", "build_kvtier"):
            self.assertRegex(lib, rf"(?m)^{function}\(\) {{")
        # The first RUN needs only what was copied before it.
        copies = [arg for ins, arg in self.stages[0][1][:3] if ins == "COPY"]
        self.assertEqual(copies, ["scripts/lib.sh scripts/lib.sh"])

    def test_runtime_stage(self):
        instructions = self.stages[1][1]
        kinds = [ins for ins, _ in instructions]
        args = dict(instructions)
        (install,) = [arg for ins, arg in instructions if ins == "RUN"]
        self.assertIn("xargs -a /tmp/runtime-packages.txt apt-get install", install)
        self.assertIn("python3-grpcio", install)
        self.assertIn("useradd --system --uid 10001", install)
        self.assertEqual(args["USER"], "10001:10001")
        # The user is set before the process starts and never switched back.
        self.assertLess(kinds.index("USER"), kinds.index("ENTRYPOINT"))
        self.assertEqual(kinds.count("USER"), 1)
        self.assertEqual(args["ENTRYPOINT"], '["kvtier-server"]')
        self.assertIn('CMD ["kvtier-health", "--target=127.0.0.1:50051"', args["HEALTHCHECK"])
        self.assertIn("COPY container/kvtier-health /usr/local/bin/kvtier-health",
                      [f"{ins} {arg}" for ins, arg in instructions])
        self.assertTrue(os.access(HEALTH, os.X_OK))
        self.assertTrue(os.access(RUNTIME_PACKAGES, os.X_OK))

    def test_dockerignore_keeps_sources_in(self):
        patterns = [p for p in read(os.path.join(ROOT, ".dockerignore")).splitlines()
                    if p and not p.startswith("#")]
        ignored = lambda path: any(fnmatch.fnmatch(path, p) for p in patterns)
        for path in ("build", "build-checked", "build-h15", ".venv", ".git"):
            self.assertTrue(ignored(path), path)
        folders = re.findall(r"add_subdirectory\((\S+?)\)", read(os.path.join(ROOT, "CMakeLists.txt")))
        self.assertGreater(len(folders), 5)
        for path in folders + ["scripts", "cmake", "container", "proto/kvtier/v1/config.proto"]:
            self.assertFalse(ignored(path), path)
            self.assertTrue(os.path.exists(os.path.join(ROOT, path)), path)


@unittest.skipUnless(BIN_DIR, "KVTIER_BIN_DIR not set")
class RuntimePackagesTest(unittest.TestCase):
    def test_packages_of_the_built_programs(self):
        programs = [os.path.join(BIN_DIR, p) for p in ("kvtier-server", "kvtierctl")]
        out = subprocess.run([RUNTIME_PACKAGES, *programs], capture_output=True, text=True, check=True)
        packages = out.stdout.split()
        self.assertEqual(packages, sorted(set(packages)))
        for expected in ("libc6", "libstdc++6", "libprotobuf32", "libssl3", "libucx0", "libabsl20220623"):
            self.assertIn(expected, packages)
        self.assertTrue(any(p.startswith("libgrpc++") for p in packages), packages)
        for package in packages:  # each a real, installed package name
            status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                                    capture_output=True, text=True)
            self.assertEqual(status.stdout, "install ok installed", package)

    def test_fails_on_a_library_no_package_holds(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        with open(os.path.join(tmp, "orphan.c"), "w") as f:
            f.write("int orphan(void) { return 1; }\n")
        with open(os.path.join(tmp, "main.c"), "w") as f:
            f.write("int orphan(void);\nint main(void) { return orphan(); }\n")
        subprocess.run(["cc", "-shared", "-fPIC", "-o", "liborphan.so", "orphan.c"], cwd=tmp, check=True)
        subprocess.run(["cc", "-o", "main", "main.c", "-L.", "-lorphan", "-Wl,-rpath," + tmp],
                       cwd=tmp, check=True)
        result = subprocess.run([RUNTIME_PACKAGES, os.path.join(tmp, "main")], capture_output=True, text=True)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("no Debian package holds " + tmp + "/liborphan.so", result.stderr)
        missing = subprocess.run([RUNTIME_PACKAGES, os.path.join(tmp, "absent")], capture_output=True)
        self.assertNotEqual(missing.returncode, 0)


@unittest.skipUnless(BIN_DIR, "KVTIER_BIN_DIR not set")
class HealthCheckTest(unittest.TestCase):
    """kvtier-health against a real kvtier-server."""

    def start_server(self, *flags):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        port_file = os.path.join(tmp, "port")
        log = open(os.path.join(tmp, "server.log"), "w")
        self.addCleanup(log.close)
        server = subprocess.Popen(
            [os.path.join(BIN_DIR, "kvtier-server"), "--listen=127.0.0.1:0", "--port_file=" + port_file,
             "--data_dir=" + os.path.join(tmp, "data"), "--ucx=false", *flags], stderr=log)
        self.addCleanup(lambda: server.poll() is None and (server.kill(), server.wait()))
        deadline = time.monotonic() + 30
        while not (os.path.exists(port_file) and read(port_file).strip()):
            self.assertIsNone(server.poll(), read(os.path.join(tmp, "server.log")))
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        return server, "127.0.0.1:" + read(port_file).strip(), tmp

    def health(self, target, *flags):
        return subprocess.run([HEALTH, "--target=" + target, "--deadline_s=2", *flags],
                              capture_output=True, text=True)

    def test_plaintext(self):
        server, target, _ = self.start_server()
        self.assertEqual(self.health(target).returncode, 0)
        server.send_signal(signal.SIGTERM)
        self.assertEqual(server.wait(timeout=30), 0)
        stopped = self.health(target)
        self.assertEqual(stopped.returncode, 1)
        self.assertIn("UNAVAILABLE", stopped.stderr)

    def test_mtls_with_access_file_needs_no_token(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        access = os.path.join(tmp, "access.txt")
        line = subprocess.run([os.path.join(BIN_DIR, "kvtierctl"), "new-token", "acme",
                               os.path.join(tmp, "acme.token")], capture_output=True, text=True, check=True)
        with open(access, "w") as f:
            f.write(line.stdout)
        tls = lambda name: os.path.join(TLS_DIR, name)
        server, target, _ = self.start_server(
            "--tls_cert_file=" + tls("server.pem"), "--tls_key_file=" + tls("server.key"),
            "--tls_client_ca_file=" + tls("ca.pem"), "--access_file=" + access)
        client_cert = ["--tls_cert_file=" + tls("client.pem"), "--tls_key_file=" + tls("client.key")]
        self.assertEqual(self.health(target, "--tls_ca_file=" + tls("ca.pem"), *client_cert).returncode, 0)
        self.assertEqual(self.health(target, "--tls_ca_file=" + tls("ca.pem"), "--server_name=localhost",
                                     *client_cert).returncode, 0)
        # Plaintext, TLS without a client certificate, and a wrong name fail.
        self.assertEqual(self.health(target).returncode, 1)
        self.assertEqual(self.health(target, "--tls_ca_file=" + tls("ca.pem")).returncode, 1)
        self.assertEqual(self.health(target, "--tls_ca_file=" + tls("ca.pem"), "--server_name=other.example",
                                     *client_cert).returncode, 1)
        server.send_signal(signal.SIGTERM)
        self.assertEqual(server.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
