#!/usr/bin/env bash
# The GPU benchmark, for a bare CUDA machine with PyTorch (nothing of ours installed, no internet).
#
#   benchmarks/gpu_bench.sh [bench|speed|sweep VARIANTS.json|all VARIANTS.json]
#
# bench (default): `deepdive bench` on cuda: fast x3 seeds, default x3, best x1, a 5-model ensemble of best,
#                  and the PyTorch examples/mnist reference for 3 epochs; the combined table is printed last.
# speed:           the fast preset (1 seed) with larger batches and with torch.compile + CUDA graphs, to find
#                  what brings it under 1 s: a step there is bound by Python dispatch (~5.7 ms/step on an H200).
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
  # One process per preset group: a crash in one leaves the others' lines in bench.jsonl.
  "$PY" -m deepdive.train.bench --device cuda --presets fast --seeds 3 --peer-epochs 3 --no-progress \
    --json-out "$jsonl" 2>&1 | tee "$OUT/bench_fast.log"
  "$PY" -m deepdive.train.bench --device cuda --presets default --seeds 3 --peer-epochs 0 --no-progress \
    --json-out "$jsonl" 2>&1 | tee "$OUT/bench_default.log"
  "$PY" -m deepdive.train.bench --device cuda --presets best --seeds 1 --ensemble 5 --peer-epochs 0 \
    --no-progress --json-out "$jsonl" 2>&1 | tee "$OUT/bench_best.log"
  echo
  "$PY" benchmarks/bench_table.py "$jsonl" | tee "$OUT/table.txt"
}

speed() {
  local jsonl="$OUT/speed.jsonl"
  : > "$jsonl"
  for ov in '{"batch_size": 512}' '{"batch_size": 1024}' '{"batch_size": 1024, "epochs": 5}' \
            '{"compile": true, "compile_mode": "reduce-overhead"}' \
            '{"batch_size": 1024, "compile": true, "compile_mode": "reduce-overhead"}'; do
    echo "== fast with $ov"
    "$PY" -m deepdive.train.bench --device cuda --presets fast --seeds 1 --peer-epochs 0 --no-progress \
      --overrides "$ov" 2>&1 | tee -a "$OUT/speed.log" | tail -4
  done
}

case "$mode" in
  bench) bench ;;
  speed) speed ;;
  sweep) "$PY" benchmarks/sweep.py "$2" --device cuda --out "$OUT/sweep.jsonl" 2>&1 | tee "$OUT/sweep.log" ;;
  all)
    "$PY" benchmarks/sweep.py "$2" --device cuda --out "$OUT/sweep.jsonl" 2>&1 | tee "$OUT/sweep.log"
    bench ;;
  *) echo "usage: $0 [bench|sweep FILE|all FILE]" >&2; exit 2 ;;
esac
