# Shared by scripts/main.sh and scripts/test.sh: installs what is missing
# (Debian packages) and builds kvtier. Source it; do not run it.

KVTIER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KVTIER_BUILD_DIR="${KVTIER_BUILD_DIR:-$KVTIER_ROOT/build}"

# Every Debian package the project builds, tests or benchmarks with.
KVTIER_DEBIAN_PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libabsl-dev libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc
  libprotobuf-dev librocksdb-dev libucx-dev ucx-utils libxxhash-dev
  libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev pybind11-dev
  python3 python3-venv redis-server redis-tools
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

# Release build with tests and benchmarks. CUDA kernels are compiled when
# nvcc is found (the CUDA toolkit puts it under /usr/local/cuda/bin).
build_kvtier() {
  if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
  fi
  log "configuring $KVTIER_BUILD_DIR"
  cmake -S "$KVTIER_ROOT" -B "$KVTIER_BUILD_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DKVTIER_BUILD_TESTS=ON -DKVTIER_BUILD_BENCHMARKS=ON >/dev/null
  log "building with $(nproc) jobs"
  cmake --build "$KVTIER_BUILD_DIR" -j "$(nproc)"
}
