# tdrl's developer commands. Each target creates .venv when needed and installs what it
# uses, pinned by constraints.txt (torch 2.13.0 CPU, torchrl 0.14.1, tensordict 0.14.3).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
SRC := tdrl tdrl_examples tests benchmarks

.PHONY: run test test-all lint format bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and on its own, so the pinned CPU build is what every later step sees.
$(VENV)/.run-deps: $(PY) setup.py constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps setup.py
	$(PIP) -e ".[dev,atari,mujoco,plot,video]"
	touch $@

$(VENV)/.bench-deps: $(VENV)/.test-deps
	$(PIP) -e ".[bench]"
	touch $@

$(VENV)/.docs-deps: $(VENV)/.run-deps
	$(PIP) -e ".[docs]"
	touch $@

## Train PPO on CartPole-v1 (example 1) with its default settings.
run: $(VENV)/.run-deps
	$(PY) tdrl_examples/example_1.py

## The default test suite (learning checks marked slow are left out).
test: $(VENV)/.test-deps
	$(PY) -m pytest -m "not slow" -q

## Every test, the slow learning checks included.
test-all: $(VENV)/.test-deps
	$(PY) -m pytest -q

## ruff (lint, Google docstrings in tdrl/, format) and mypy on tdrl/, as CI runs them.
lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)
	$(VENV)/bin/mypy

format: $(VENV)/.test-deps
	$(VENV)/bin/ruff check --fix $(SRC)
	$(VENV)/bin/ruff format $(SRC)

## Every benchmark in benchmarks/, with its default arguments.
bench: $(VENV)/.bench-deps
	@for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

docs: $(VENV)/.docs-deps
	$(PY) -m sphinx -b html docs docs/_build/html -q

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .ruff_cache *.egg-info
