# Quick start: `make demo` (set up, train + evaluate a small sinusoid run) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip install --disable-pip-version-check -q

.PHONY: setup demo test test-all lint bench

# torch first, pinned to the CPU build that lies on these machines' disk: a bare `torch`
# requirement with no torch installed would pull a multi-GB CUDA build.
setup:
	$(PIP) torch==2.13.0
	$(PIP) -e ".[all,dev]"

# A small default (5,000 meta-iterations instead of the paper's 70,000: about a minute here),
# then the paper's evaluation protocol; prints the results table and writes plots.
demo: setup
	$(PYTHON) -m metarl train sinusoid --evaluate \
		--set iterations=5000 baseline_iterations=5000

test: setup
	$(PYTHON) -m pytest -q

test-all: setup
	$(PYTHON) -m pytest -q -m ""

lint: setup
	$(PYTHON) -m ruff check metarl envs tests scripts
	$(PYTHON) -m ruff format --check metarl envs tests scripts

bench: setup
	$(PYTHON) -m metarl bench --suite quick
