# ssmbench — the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ssmbench-installed

.PHONY: install demo test test-slow smoke bench results docs tune-example clean

install: $(STAMP)

# Re-runs only when the dependency declarations change; installs the tested pins from constraints.txt. torch comes
# in the CUDA build this machine's driver runs (nvidia-smi), or the one stated: `make install CUDA=12.6` (12.8,
# 13.0, cpu); without an NVIDIA GPU, or with a driver >= 580, it is PyPI's default wheel (docs/gpu.md).
# After a change of driver or CUDA=: `make clean install`.
CUDA ?=
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	torch="$$($(PY) -m ssmbench.nvidia pip-args --cuda '$(CUDA)')" && if [ -n "$$torch" ]; then $(PY) -m pip install -q $$torch; fi
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,slurm,wandb,bench,postgres]"
	touch $(STAMP)

demo: install
	$(BIN)/ssmbench train recipes/quickstart.yaml

test: install
	$(PY) -m pytest -q -m "not slow"

test-slow: install
	$(PY) -m pytest -q -m slow

smoke: install
	$(BIN)/ssmbench smoke recipes

bench: install
	$(BIN)/ssmbench bench

# Reruns the quick sweeps and the one-pole example (runs made by this code are skipped), then rewrites the README's
# claims table and docs/results.md from their records (sized for 15 minutes on 2 idle cores).
results: install
	$(PY) -m ssmbench.readme_tables

# Rewrites docs/cli.md and docs/recipes.md from the command line and the recipe schema (tests/test_docs.py
# fails when they are stale).
docs: install
	$(PY) -m ssmbench.docs_gen

# Tunes alpha and lr on validation for sMNIST and the high-frequency synthetic task beside the baseline tuning lr
# with the same budget (docs/tuning.md; 48 short runs, ~640 CPU-s: about 6 minutes on 2 idle cores) and rewrites
# the tune-example block of docs/results.md.
tune-example: install
	$(PY) -m ssmbench.tune_example

clean:
	rm -rf $(VENV) .pytest_cache
