#!/usr/bin/env bash
# The performance model against measured CPU runs (docs/prediction.md, "Validation on this machine"): pythia-14m,
# -31m and -70m shapes under single (1 process), ddp, fsdp and zero2 (2 processes) at a few micro-batches, fp32,
# sequence 128, global batch 16. Two calibrations (each after the CPU micro-benchmarks: matmul FLOP/s, memory-bound
# kernels, gloo collectives): one on the pythia-14m runs only, which then predicts the 31m and 70m runs it never saw
# (held out); one on all 16 runs (a CPU calibrated on the shapes it will predict).
# Run it on an idle machine: every process shares the same cores.
#   bash scripts/cpu_prediction_check.sh [OUT]        (OUT: default /tmp/cpu-prediction)
set -euo pipefail
OUT=${1:-/tmp/cpu-prediction}
BENCH=${BENCH:-pretrain-bench}
COMMON=(model.seq_len=128 model.global_batch=16 tricks=naive steps=5 warmup_steps=2)
rm -rf "$OUT"
run() { local store=$1; shift; $BENCH run "${COMMON[@]}" "$@" store="$OUT/$store" >/dev/null; }

for mb in 2 8; do run fit model=pythia-14m hardware=cpu-1 strategy=single micro_batch=$mb; done
for s in ddp fsdp zero2; do for mb in 2 8; do run fit model=pythia-14m hardware=cpu-2 strategy=$s micro_batch=$mb; done; done
for m in pythia-31m pythia-70m; do
  run held-out model=$m hardware=cpu-1 strategy=single micro_batch=4
  for s in ddp fsdp zero2; do run held-out model=$m hardware=cpu-2 strategy=$s micro_batch=4; done
done
mkdir -p "$OUT/all" && cat "$OUT/fit/records.jsonl" "$OUT/held-out/records.jsonl" > "$OUT/all/records.jsonl"

$BENCH calibrate --gpu cpu --store "$OUT/fit"
mkdir -p "$OUT/held-out/calibration" && cp "$OUT/fit/calibration/cpu.yaml" "$OUT/held-out/calibration/"
$BENCH calibrate --gpu cpu --store "$OUT/all"
echo "## calibrated on pythia-14m: the fitted runs"; $BENCH table --store "$OUT/fit"
echo "## calibrated on pythia-14m: the held-out runs (pythia-31m, pythia-70m)"; $BENCH table --store "$OUT/held-out"
echo "## calibrated on all 16 runs"; $BENCH table --store "$OUT/all"
