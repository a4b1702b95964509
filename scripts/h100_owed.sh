#!/usr/bin/env bash
# The GPU measurements the issues still owe, for one H100 80GB, in stages that each fit a 10-minute slot (they are
# resumable: a cell already in the store is not measured again, so a cut-off stage can simply be run again).
#
#   scripts/h100_owed.sh STAGE [STORE]       STAGE: core | peers | zoo | search | numerics | target | all
#                                             STORE: results/h100
#
# Stage budgets are estimates for an H100 SXM with torch 2.11 (about 1 min of torch.compile per new cell):
#   core      ~5 min   issue 2: free-lunch records for pythia-160m (mb 16) and pythia-1b (mb 8), with MFU
#   peers     ~9 min   issue 6: HF Trainer free-lunch vs ours on pythia-160m / 410m / 1b (1 repeat each side)
#   zoo       ~6 min   issue 8: free-lunch records for GPT-2 124M, SmolLM2-360M, Llama-3.2-1B shapes
#   search    ~10 min  issue 3: method + micro-batch search for pythia-410m, then validate the winner for 50 steps
#   numerics  ~8 min   issue 6: 200-step loss curves of fused CE, selective AC and FP8 against bf16's seed spread
#   target    ~2 × 10 min  issue 5: time to a validation loss for GPT-2 124M on the machine's installed Python sources
#                      (`data=python`: stdlib + site-packages, tokenised once and cached), free-lunch vs fused CE, 3 seeds each. The
#                      issue asks for ≥ 100M tokens: the corpus's meta.json (under data.cache_dir) gives the count. The
#                      target loss is a first guess (TARGET_LOSS): a run that never reaches it ends `not_reached`;
#                      lower or raise it after the first seed. Replace free-lunch-flce by the search's winner for
#                      gpt2-124m if `search model=gpt2-124m hardware=1xh100` names another.
# It never installs anything: run `make setup TORCH=... EXTRAS=dev,fp8` first and set PYTHON=.venv/bin/python (or put
# the package on PYTHONPATH).
set -euo pipefail
stage=${1:?stage: core | peers | zoo | search | numerics | target | all}
store=${2:-results/h100}
pb() { "${PYTHON:-python3}" -m pretrain_bench.cli "$@"; }
run() { pb run hardware=1xh100 strategy=single tricks=free-lunch steps=10 warmup_steps=3 store="$store" "$@" || true; }

core() {
  run model=pythia-160m micro_batch=16
  run model=pythia-1b micro_batch=8
}
peers() {
  pb peers model=pythia-160m hardware=1xh100 micro_batch=16 peers.repeats=1 store="$store" || true
  pb peers model=pythia-410m hardware=1xh100 micro_batch=16 peers.repeats=1 store="$store" || true
  pb peers model=pythia-1b hardware=1xh100 micro_batch=8 peers.repeats=1 store="$store" || true
}
zoo() {
  run model=gpt2-124m micro_batch=16
  run model=smollm2-360m micro_batch=16
  run model=llama-3.2-1b micro_batch=8
}
search() {
  pb search model=pythia-410m hardware=1xh100 methods=all steps=5 warmup_steps=1 store="$store" || true
  pb validate model=pythia-410m hardware=1xh100 strategy=single tricks=free-lunch micro_batch=16 steps=50 \
    store="$store" || true
}
numerics() {
  pb numerics model=pythia-160m hardware=1xh100 strategy=single micro_batch=16 steps=200 warmup_steps=0 seeds=3 \
    baseline=free-lunch tricks.precision=bf16 'methods=[free-lunch-flce,free-lunch-sac,free-lunch-fp8]' \
    store="$store" || true
}
target() {
  pb target model=gpt2-124m hardware=1xh100 strategy=single micro_batch=32 model.global_batch=64 \
    model.recipe.steps=600 target.max_steps=600 target.eval_every=50 target.seeds=3 target.loss="${TARGET_LOSS:-3.0}" \
    data=python 'methods=[free-lunch,free-lunch-flce]' store="$store" || true
}
case $stage in
  all) core; peers; zoo; search; numerics; target ;;
  core | peers | zoo | search | numerics | target) "$stage" ;;
  *) echo "unknown stage $stage: core | peers | zoo | search | numerics | target | all" >&2; exit 2 ;;
esac
pb table --store "$store"
