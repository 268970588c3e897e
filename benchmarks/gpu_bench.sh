#!/usr/bin/env bash
# The GPU benchmark, for a bare CUDA machine with PyTorch (nothing of ours installed, no internet).
#
#   benchmarks/gpu_bench.sh [bench | sweep VARIANTS.json | all VARIANTS.json]
#
# bench (default): a capture check, then `deepdive bench` on cuda: fast x3 seeds with the PyTorch examples/mnist
#                  reference (14 epochs), then default x3 and best x3; the combined table is printed last.
# sweep FILE:      benchmarks/sweep.py over FILE's recipe variants (how the presets were chosen), keeping every
#                  run's test probabilities in probs.npz for benchmarks/ensembles.py.
# all FILE:        bench, then the sweep for whatever time is left of $DEADLINE seconds (default 450).
# Every mode first checks that a resumed run ends where the uninterrupted one does (benchmarks/resume_check.py)
# and that run.log_train_batch records on the GPU what it records on the CPU (benchmarks/recorder_check.py).
#
# MNIST travels with the working tree: copy the four idx files (raw or .gz) into .device/mnist/ (git-ignored)
# and carry ".device". Everything goes to $OUT (default ./gpu-bench-out): log.txt, bench.jsonl, sweep.jsonl,
# probs.npz, table.txt (few files: the device tool brings back at most 8).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1 DEEPDIVE_DATA_DIR="${DEEPDIVE_DATA_DIR:-.device/mnist}"
OUT="${OUT:-gpu-bench-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
LOG="$OUT/log.txt"
START=$(date +%s)
DEADLINE="${DEADLINE:-450}"
mode="${1:-bench}"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader || true
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee -a "$LOG" || true

bench() {
  local jsonl="$OUT/bench.jsonl" b="$PY -m deepdive.train.bench --device cuda --no-progress"
  : > "$jsonl"
  # Capture check first: cuda_graphs forced on, so a capture failure is an error here, not a silent eager run.
  echo "== capture check" | tee -a "$LOG"
  $b --presets fast --seeds 1 --epochs 1 --limit-train 5000 --peer-epochs 0 --overrides '{"cuda_graphs": true}' \
    2>&1 | tail -3 | tee -a "$LOG" || true
  # One process per group: a crash in one leaves the others' lines in bench.jsonl.
  $b --presets fast --seeds 3 --peer-epochs ${PEER_EPOCHS:-14} --json-out "$jsonl" 2>&1 | tee -a "$LOG" || true
  $b --presets default,best --seeds 3 --peer-epochs 0 --json-out "$jsonl" 2>&1 | tee -a "$LOG" || true
  "$PY" benchmarks/bench_table.py "$jsonl" > "$OUT/table.txt" || true
}

sweep() {
  local left=$(( DEADLINE - ($(date +%s) - START) ))
  if (( left < 30 )); then echo "== no time left for the sweep" | tee -a "$LOG"; return 0; fi
  echo "== sweep $1 (${left}s left)" | tee -a "$LOG"
  timeout "$left" "$PY" benchmarks/sweep.py "$1" --device cuda --out "$OUT/sweep.jsonl" --probs-out "$OUT/probs.npz" \
    2>&1 | tee -a "$LOG" || true
  # the sweep's own table is lost if the timeout cut it: rebuild it from the JSON lines
  [ -s "$OUT/sweep.jsonl" ] || return 0
  "$PY" - "$OUT/sweep.jsonl" <<'EOF' | tee -a "$OUT/table.txt"
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["name"], []).append(r)
print(f"\nsweep: {'variant':24s} seeds  test acc median (min-max)  train s  graphs  teacher")
for name, rs in rows.items():
    accs = [100 * r["test_accuracy"] for r in rs]
    teacher = rs[0].get("teacher_test_accuracy")
    print(f"       {name:24s} {len(rs):5d}  {statistics.median(accs):6.2f}% ({min(accs):.2f}-{max(accs):.2f})"
          f"  {statistics.median(r['train_seconds'] for r in rs):7.2f}  {rs[0].get('cuda_graphs')}"
          + (f"  {100 * teacher:.2f}%" if teacher is not None else ""))
EOF
}

# deepdive resume on the device's own step (a CUDA graph whose generator and momentum are restored in place): the
# CPU tests assert it bit for bit; here it is only ever checked on the GPU machine. Default preset: graphs, no
# compile, so it costs seconds.
echo "== resume check" | tee -a "$LOG"
timeout 120 "$PY" benchmarks/resume_check.py --device cuda --preset default 2>&1 | tail -2 | tee -a "$LOG" || true
# and into a pruned epoch, whose per-image losses the graph writes in place and the state carries
timeout 120 "$PY" benchmarks/resume_check.py --device cuda --preset default --ensemble 1 \
  --overrides '{"prune": 0.5, "prune_until": 1.0}' 2>&1 | tail -2 | tee -a "$LOG" || true

# run.log_train_batch on the device: the same record as from CPU copies, and no synchronisation per batch
timeout 60 "$PY" benchmarks/recorder_check.py --device cuda 2>&1 | tail -1 | tee -a "$LOG" || true

case "$mode" in
  bench) bench ;;
  sweep) sweep "$2" ;;
  all) bench; sweep "$2" ;;
  *) echo "usage: $0 [bench|sweep FILE|all FILE]" >&2; exit 2 ;;
esac
echo
cat "$OUT/table.txt" 2>/dev/null || true
