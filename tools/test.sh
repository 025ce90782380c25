#!/usr/bin/env bash
# The test command (README; .ci/run calls it): configure, build (CUDA code too when nvcc exists, so
# nvcc errors are caught), run every test. GPU tests (label gpu) skip cleanly without a device.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release ${MMATTN_CMAKE_ARGS:-}
cmake --build "$BUILD" -j"$(nproc)"
ctest --test-dir "$BUILD" --output-on-failure -j"$(nproc)"
