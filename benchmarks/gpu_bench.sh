#!/usr/bin/env bash
# The GPU benchmark, for a bare CUDA machine with PyTorch (nothing of ours installed, no internet).
#
#   benchmarks/gpu_bench.sh [bench|sweep VARIANTS.json|all VARIANTS.json]
#
# bench (default): `deepdive bench` on cuda: fast x3 seeds, default x3, best x1, a 5-model ensemble of best,
#                  and the PyTorch examples/mnist reference for 3 epochs; the combined table is printed last.
# sweep FILE:      benchmarks/sweep.py over FILE's recipe variants (how the presets were chosen).
#
# MNIST travels with the working tree: copy the four idx files (raw or .gz) into .device/mnist/ (git-ignored)
# and carry ".device". Logs and JSON lines go to $OUT (default ./gpu-bench-out).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1 DEEPDIVE_DATA_DIR="${DEEPDIVE_DATA_DIR:-.device/mnist}"
OUT="${OUT:-gpu-bench-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
mode="${1:-bench}"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader || true
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/env.txt"

bench() {
  local jsonl="$OUT/bench.jsonl"
  : > "$jsonl"
  # One process per call keeps each preset's compile warm-up visible in its own line of the table.
  "$PY" -m deepdive.train.bench --device cuda --presets fast --seeds 3 --peer-epochs 3 --no-progress \
    --json-out "$jsonl" 2>&1 | tee "$OUT/bench_fast.log"
  "$PY" -m deepdive.train.bench --device cuda --presets default --seeds 3 --peer-epochs 0 --no-progress \
    --json-out "$jsonl" 2>&1 | tee "$OUT/bench_default.log"
  "$PY" -m deepdive.train.bench --device cuda --presets best --seeds 1 --ensemble 5 --peer-epochs 0 \
    --no-progress --json-out "$jsonl" 2>&1 | tee "$OUT/bench_best.log"
  echo
  "$PY" benchmarks/bench_table.py "$jsonl" | tee "$OUT/table.txt"
}

case "$mode" in
  bench) bench ;;
  sweep) "$PY" benchmarks/sweep.py "$2" --device cuda --out "$OUT/sweep.jsonl" 2>&1 | tee "$OUT/sweep.log" ;;
  all)
    "$PY" benchmarks/sweep.py "$2" --device cuda --out "$OUT/sweep.jsonl" 2>&1 | tee "$OUT/sweep.log"
    bench ;;
  *) echo "usage: $0 [bench|sweep FILE|all FILE]" >&2; exit 2 ;;
esac
