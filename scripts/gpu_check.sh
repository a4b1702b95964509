#!/usr/bin/env bash
# The first check on a machine with a GPU of any type in the catalogue (`pretrain-bench list gpus`), in at most
# 10 minutes on one GPU: a smoke test of every CUDA path at tiny scale (compile, each SDPA kernel, fused AdamW, fused
# CE, checkpointing, FP8 where the GPU has it, FSDP2 and ZeRO-3 at world size 1, profile), then the core records
# (pythia-160m and pythia-1b free-lunch at a reduced global batch, with MFU) and one `peers` comparison.
#
#   scripts/gpu_check.sh [--dry-run] [--gpu KEY] [--out DIR] [--budget-s 600]
#
# --dry-run lists every command with its expected time and time-out. Output: results/<gpu>/ ($OUT/results/<gpu>/
# when $OUT is set): the record store, gpu_check.md (a summary table), gpu_check.json, gpu_check_logs/<step>.txt.
# A failed step is recorded and the check goes on; exit status 0 when every step is ok, 3 otherwise.
# It installs nothing: PYTHON (default python3) runs this checkout's src/ with whatever stack it has (an offline GPU
# host: torch + transformers, with the rest on PYTHONPATH).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
cd "$root"
exec "$python" -m pretrain_bench.bench.gpu_check "$@"
