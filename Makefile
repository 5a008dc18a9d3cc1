# Quick start: `make demo` (set up, train + evaluate a small sinusoid run) and `make test`.
#
# Inside an active virtualenv (or conda env) everything installs there. Otherwise the first
# command creates ./.venv and uses it: a distribution's own Python (Debian 12+, Ubuntu 23.04+)
# refuses `pip install` into itself (PEP 668). BASE_PYTHON is the Python that creates it.
BASE_PYTHON ?= python3
ifneq ($(strip $(VIRTUAL_ENV)$(CONDA_PREFIX)),)
PYTHON ?= python
VENV :=
else
PYTHON ?= .venv/bin/python
VENV := .venv/bin/python
endif
PIP = $(PYTHON) -m pip install --disable-pip-version-check -q
# The same interpreter by an absolute path, for recipes that change directory.
PYTHON_ABS = $(if $(findstring /,$(PYTHON)),$(abspath $(PYTHON)),$(PYTHON))

.PHONY: setup demo test lint bench smoke readme-commands examples docs

.venv/bin/python:
	$(BASE_PYTHON) -m venv .venv
	@echo "created .venv (activate it with: . .venv/bin/activate)"

# torch first, pinned to the CPU build that lies on these machines' disk: a bare `torch`
# requirement with no torch installed would pull a multi-GB CUDA build.
setup: $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[all,dev]"

# A small default (5,000 meta-iterations instead of the paper's 70,000: about a minute here),
# then the paper's evaluation protocol; prints the results table and writes plots.
DEMO_ITERATIONS ?= 5000
demo: setup
	$(PYTHON) -m metarl train sinusoid --evaluate \
		--set iterations=$(DEMO_ITERATIONS) baseline_iterations=$(DEMO_ITERATIONS)

test: setup
	$(PYTHON) -m pytest -q

lint: setup
	$(PYTHON) -m ruff check metarl envs tests scripts examples
	$(PYTHON) -m ruff format --check metarl envs tests scripts examples

bench: setup
	$(PYTHON) -m metarl bench --suite quick

# CI: the quick suite into a temporary folder (the committed BENCHMARKS.md is the paper suite's).
smoke: setup
	report=$$(mktemp -d) && $(PYTHON) -m metarl bench --suite quick --no-progress \
		--runs-dir $$report/runs --report-dir $$report

# CI: every command the README documents, at a tiny budget, progress bars on.
readme-commands: setup
	PYTHON=$(PYTHON_ABS) bash .ci/readme-commands

# CI: every program of examples/, each on its own, in a scratch folder.
examples: setup
	cd $$(mktemp -d) && for example in $(CURDIR)/examples/*.py; do \
		echo "+ python $$example"; start=$$(date +%s); \
		timeout 900 $(PYTHON_ABS) $$example || exit 1; \
		echo "  ($$(( $$(date +%s) - start )) s)"; \
	done

# The documentation site (MkDocs, API reference from the docstrings, CLI reference from the
# parser), strict: a broken reference fails the build. Output in ./site.
docs: setup
	$(PIP) -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict -d site
