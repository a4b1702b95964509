#!/usr/bin/env bash
# A search where memory binds, on CPU: `search methods=all` under a per-process memory budget (hardware.memory_gib,
# enforced on each rank's RSS growth and known to the performance model), once with search.prune=rules and once with
# search.prune=predicted, each on a fresh store. Prints per mode the wall time, the launches (probes and throughput
# measurements, counted in the store) and the winner, then per method the largest micro-batch the model predicted
# beside the one the probes found.
#
#   scripts/demo_memory_bound_search.sh [OVERRIDE ...]
#
# Expect tens of minutes of both cores per search: each free-lunch probe compiles (~1 min on 2 cores). Overrides go
# to both searches, e.g. `strategies=[ddp,zero2,fsdp]` for a smaller space.
# Environment: MEMORY_GIB (default 0.85: the model predicts every plain method to fit micro-batch 4 of the
# per-process 8, and fused linear-CE to fit 8; measured RSS puts some plain methods at 2), GLOBAL_BATCH (16, i.e.
# 8 per process), METHODS (all), OUT (a new temporary directory), PYTHON (python3).
# pythia-14m's recipe is fp16, which DeepSpeed cannot run on CPU, so the demo trains bf16.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
out=${OUT:-$(mktemp -d -t membound-XXXX)}
common=(model=pythia-14m model.seq_len=128 model.recipe.precision=bf16 model.global_batch="${GLOBAL_BATCH:-16}"
        hardware=cpu-2 hardware.memory_gib="${MEMORY_GIB:-0.85}" "methods=${METHODS:-all}" steps=5 warmup_steps=1
        search_repeats=1)

for mode in rules predicted; do
  store="$out/$mode"
  rm -rf "$store"
  mkdir -p "$store"
  echo "== search.prune=$mode (store $store)"
  SECONDS=0
  status=0
  "$python" -m pretrain_bench.cli search "${common[@]}" "search.prune=$mode" "store=$store" "$@" | tee "$out/$mode.log" \
    || status=$?
  echo "$SECONDS" > "$store/wall_s"
  case $status in 0 | 3) ;; *) echo "search.prune=$mode failed (exit $status)" >&2; exit "$status" ;; esac
done

"$python" - "$out" <<'EOF'
import json
import sys
from collections import Counter
from pathlib import Path

out = Path(sys.argv[1])
summaries = {}
print("\nmode       wall     launches (probe + throughput)  winner")
for mode in ("rules", "predicted"):
    store = out / mode
    records = {}
    kinds = Counter()
    for line in (store / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        records[r["key"]] = r
        kinds[r["kind"]] += 1
    summary = json.loads(next(store.glob("search-*.json")).read_text())
    summaries[mode] = summary
    best = records.get(summary["best_key"])
    winner = f"{best['cell']['strategy']} · {best['cell']['tricks']} at micro-batch {best['cell']['micro_batch']}" \
        if best else "none fits"
    wall = int((store / "wall_s").read_text())
    print(f"{mode:10s} {wall:6d} s  {sum(kinds.values()):3d} ({kinds['probe']} + {kinds['throughput']})"
          f"{'':20s}{winner}")


def size(outcome: dict, key: str = "micro_batch") -> str:
    """A micro-batch, 0 where nothing fits, - where the method was pruned before its size was known."""
    if outcome.get("status") == "oom" and key == "micro_batch":
        return "0"
    return "-" if outcome.get(key) is None else str(outcome[key])


print("\nmethod                                 predicted  found (rules)  found (predicted)  outcome (predicted)")
found = {mode: {o["method"]: o for o in s["outcomes"]} for mode, s in summaries.items()}
for method, o in found["predicted"].items():
    rules = found["rules"].get(method, {})
    if not (rules.get("probes") or o.get("probes") or o.get("predicted_micro_batch") is not None):
        continue  # pruned by a rule in both modes, with nothing predicted (a size-only rule: R1-R3)
    print(f"{method:38s} {size(o, 'predicted_micro_batch'):>9s}  {size(rules):>13s}  {size(o):>17s}  "
          f"{o['status']} {o['reason'].split(':')[0]}")
EOF
