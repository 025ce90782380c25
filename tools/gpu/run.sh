#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (H100), from the repo root, in one call:
#   unpack the carried Debian packages -> configure + build (ninja) -> ctest -L gpu (and all
#   tests) -> benchmarks -> logs and JSON into $OUT.
# Stages can be chosen: tools/gpu/run.sh [golden] [build] [test] [bench] [llava7b]   (default: build test bench)
# Everything ends up in $OUT/results.tgz as well (bench/results/*.json and the logs).
# llava7b: writes a random LLaVA-1.5-7B-shaped checkpoint (13.5 GB, /tmp/llava7b) and benchmarks it
# against HF transformers (bench/peer_llava7b.py, then bench_llava7b); a few minutes.
# Prerequisite here: bash tools/gpu/fetch_debs.sh; then device run with carry [".debs"] (plus
# ".ref" when the golden stage needs diffusers' source).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
STAGES=${*:-build test bench}
has() { [[ " $STAGES " == *" $1 "* ]]; }
log() { echo "== $*" | tee -a "$OUT/run.log"; }
JOBS=$(nproc)
status=0

PREFIX=/tmp/mmattn-deps
if [ ! -d "$PREFIX/usr" ]; then
  for f in .debs/*.deb; do dpkg -x "$f" "$PREFIX"; done
fi
LIBDIR=$PREFIX/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$LIBDIR:$LIBDIR/openblas-pthread:${LD_LIBRARY_PATH:-}
# cuDNN: the toolkit's if present, else the one in PyTorch's wheel.
if [ ! -f /usr/local/cuda/include/cudnn.h ]; then
  CUDNN_ROOT=$(python3 -c 'import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__) if nvidia.cudnn.__file__ else list(nvidia.cudnn.__path__)[0])' 2>/dev/null || true)
  if [ -n "$CUDNN_ROOT" ]; then
    export CUDNN_ROOT
    export LD_LIBRARY_PATH=$CUDNN_ROOT/lib:$LD_LIBRARY_PATH
    # the wheel ships libcudnn.so.9 only; give the linker an unversioned name
    [ -e "$CUDNN_ROOT/lib/libcudnn.so" ] || ln -sf libcudnn.so.9 "$CUDNN_ROOT/lib/libcudnn.so"
  fi
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

if has golden; then
  log "golden data (transformers $(python3 -c 'import transformers; print(transformers.__version__)'))"
  for g in tools/golden/*.py; do
    PYTHONUNBUFFERED=1 python3 "$g" --out tests/golden 2>&1 | tee -a "$OUT/golden.log" || status=1
  done
  tar czf "$OUT/golden.tgz" -C tests golden
fi

if has build; then
  log "configure + build"
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DMMATTN_DEPS_PREFIX=$PREFIX \
    -DMMATTN_CUDA=ON -DMMATTN_CUDA_ARCHS="${MMATTN_CUDA_ARCHS:-90a}" > "$OUT/configure.log" 2>&1 \
    || { tail -30 "$OUT/configure.log"; exit 1; }
  grep -E "cuDNN|WARNING" "$OUT/configure.log" || true
  cmake --build build-gpu -j"$JOBS" > "$OUT/build.log" 2>&1 || { grep -E "error|FAILED" -A3 "$OUT/build.log" | head -60; exit 1; }
  log "build ok"
fi

if has test; then
  log "ctest -L gpu"
  ctest --test-dir build-gpu -L gpu --output-on-failure -j4 > "$OUT/ctest_gpu.log" 2>&1 || status=1
  tail -25 "$OUT/ctest_gpu.log"
  log "ctest (all)"
  ctest --test-dir build-gpu -LE gpu -j8 > "$OUT/ctest_all.log" 2>&1 || status=1
  tail -4 "$OUT/ctest_all.log"
fi

# the commit the result files name (the device copy has no .git: .commit, written before the call)
# (.commit first: a stale .git may travel with the copy)
export MMATTN_COMMIT=${MMATTN_COMMIT:-$(cat .commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if has bench; then
  log "benchmarks"
  mkdir -p bench/results
  # peers first (PyTorch on the same shapes), then ours, which merges the peer numbers in
  for p in bench/peer_*.py; do
    [ -f "$p" ] || continue
    [[ "$p" == *llava7b* ]] && continue  # its own stage
    PYTHONUNBUFFERED=1 python3 "$p" --out bench/results 2>&1 | tee -a "$OUT/bench.log" || status=1
  done
  for b in build-gpu/bench/bench_*; do
    [ -x "$b" ] || continue
    case "$b" in *llava7b* | *pruning* | *bench_eval* | *modulation*) continue ;; esac  # the llava7b stage runs them
    "$b" --out bench/results 2>&1 | tee -a "$OUT/bench.log" || status=1
  done
  cp bench/results/*.json "$OUT/" 2>/dev/null || true
fi
if has llava7b; then
  log "llava7b benchmark"
  PYTHONUNBUFFERED=1 python3 bench/peer_llava7b.py --out bench/results 2>&1 | tee -a "$OUT/bench.log" || status=1
  for img in extreme_ironing.jpg waterview.jpg; do
    build-gpu/bench/dev_preprocess assets/images/$img 30 2>&1 | tee -a "$OUT/bench.log" || status=1
  done
  build-gpu/bench/bench_llava7b --out bench/results 2>&1 | tee -a "$OUT/bench.log" || status=1
  build-gpu/bench/bench_pruning --out bench/results 2>&1 | tee -a "$OUT/bench.log" || status=1
  build-gpu/bench/bench_eval --out bench/results 2>&1 | tee -a "$OUT/bench.log" || status=1
  build-gpu/bench/bench_modulation --out bench/results 2>&1 | tee -a "$OUT/bench.log" || status=1
  cp bench/results/llava7b*.json bench/results/pruning.json bench/results/eval.json bench/results/modulation.json \
    "$OUT/" 2>/dev/null || true
fi
# One archive of every result file and log: the device call returns only a few files from $OUT.
tar czf "$OUT/results.tgz" bench/results/*.json -C "$OUT" $(cd "$OUT" && ls *.log *.txt 2>/dev/null) 2>/dev/null || true
log "done (status $status)"
exit $status
