# Two entry points: `make demo` (set up, then a small real benchmark) and `make test` (set up, then the test suite).
VENV    ?= .venv
PY      := $(VENV)/bin/python
BENCH   := $(VENV)/bin/pretrain-bench
# The interpreter the venv is made from, e.g. PYTHON=python3.12 or a module's /path/to/python3.
PYTHON  ?= python3
# The CPU build of torch lies on local disk; installing it first keeps pip from pulling a multi-GB CUDA build.
TORCH   ?= torch==2.13.0
# The wheel index torch comes from (pip --index-url), which picks its CUDA build: it must be one the node's driver
# supports (nvidia-smi's "CUDA Version"). Empty: PyPI's default build. E.g. for a driver of the R525–R575 series:
#   make setup TORCH='torch==2.11.0' TORCH_INDEX=https://download.pytorch.org/whl/cu126   (README, Install)
TORCH_INDEX ?=
# pip extras: `dev` (tests, lint); add `fp8` (torchao) on a GPU with FP8 tensor cores: make setup EXTRAS=dev,fp8
EXTRAS  ?= dev
# The stamp's name carries the set-up's settings, so changing any of them re-runs the set-up (a new PYTHON makes a
# new venv); make's own dependency on pyproject.toml covers new package requirements.
SETUP_SPEC := $(PYTHON) $(TORCH) $(TORCH_INDEX) $(EXTRAS)
STAMP   := $(VENV)/.installed-$(shell printf '%s' '$(SETUP_SPEC)' | cksum | cut -d' ' -f1)
DEMO_STORE ?= demo-results
DEMO_ARGS  := model=pythia-14m model.seq_len=128 model.global_batch=16 micro_batch=4 hardware=cpu-2 tricks=naive steps=5 warmup_steps=2

.PHONY: setup demo test test-fast clean
setup: $(STAMP)

$(STAMP): pyproject.toml
	@if [ "$$(cat $(VENV)/.python 2>/dev/null)" != "$(PYTHON)" ]; then \
	  echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv --clear $(VENV) && echo "$(PYTHON)" > $(VENV)/.python; fi
	# Editable installs from pyproject.toml need pip >= 21.3 (PEP 660); a newer pip is left as it is.
	$(PY) -m pip install -q "pip>=21.3"
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	@echo "$(SETUP_SPEC)" > $@
	@$(PY) -c "import torch; print(f'torch {torch.__version__}, CUDA build {torch.version.cuda}, ' \
	  f'GPUs visible: {torch.cuda.device_count() if torch.version.cuda else 0}')"

# A tiny GPT-NeoX (Pythia-14M shape, short sequences) on 2 CPU processes: DDP vs FSDP2 vs DeepSpeed ZeRO-2.
demo: setup
	rm -rf $(DEMO_STORE)
	for s in ddp fsdp zero2; do $(BENCH) run $(DEMO_ARGS) strategy=$$s store=$(DEMO_STORE) || exit 1; done
	$(BENCH) table --store $(DEMO_STORE)

test: setup
	$(VENV)/bin/ruff check src tests
	# Two workers, each on a core of its own (OpenMP threads of workers sharing cores spin-wait on each other), whole
	# files each (module fixtures such as the single-process reference run stay shared), longest files first
	# (tests/conftest.py): most of the suite's time is starting real torchrun workers, which overlaps well.
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15

# The inner loop: everything that starts no torchrun worker (configs, errors, records, store, reports, exports,
# single-process numerics), without the fresh-venv install test and in-process compiles: about 60 s of tests on 2 cores;
# `make test` runs all.
test-fast: setup
	$(VENV)/bin/ruff check src tests
	$(PY) -m pytest -q -n 2 -m "not distributed and not slow" --hypothesis-profile=fast

clean:
	rm -rf $(VENV) $(DEMO_STORE) bench-results .pytest_cache
