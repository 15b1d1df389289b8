# tdrl's developer commands. Each target creates .venv when needed and installs what it
# uses, pinned by constraints.txt (torch 2.13.0 CPU, torchrl 0.14.1, tensordict 0.14.3).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
SRC := tdrl tdrl_examples tests benchmarks
# Ray (the `ray` extra) goes to a directory of its own, on PYTHONPATH only for the tests
# marked `ray`: where Ray is importable, TorchRL 0.14.1 imports it in every process that
# imports torchrl.data, which made the rest of the suite ~11% slower (docs/dependencies.md).
RAY_SITE := .ray-site

.PHONY: run test test-all lint format bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and on its own, so the pinned CPU build is what every later step sees.
$(VENV)/.run-deps: $(PY) setup.py constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps setup.py
	$(PIP) -e ".[dev,atari,mujoco,box2d,plot,video]"
	touch $@

$(VENV)/.ray-deps: $(VENV)/.test-deps setup.py
	rm -rf $(RAY_SITE)
	$(PIP) --target $(RAY_SITE) "ray>=2.30"
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

## The default test suite (learning checks marked slow are left out) in two pytest-xdist
## workers (the suite used about one of two cores: the tests wait on their child processes);
## the Ray tests second, in one process.
test: $(VENV)/.test-deps $(VENV)/.ray-deps
	$(PY) -m pytest -n 2 -m "not slow and not ray" --ignore-glob="tests/test_ray*.py" -q
	PYTHONPATH=$(RAY_SITE) $(PY) -m pytest tests/test_ray*.py -m "ray and not slow" -q

## Every test, the slow learning checks included.
test-all: $(VENV)/.test-deps $(VENV)/.ray-deps
	$(PY) -m pytest -n 2 -m "not ray" --ignore-glob="tests/test_ray*.py" -q
	PYTHONPATH=$(RAY_SITE) $(PY) -m pytest tests/test_ray*.py -m ray -q

## ruff (lint, Google docstrings in tdrl/, format) and mypy on tdrl/, as CI runs them.
lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)
	$(VENV)/bin/mypy

format: $(VENV)/.test-deps
	$(VENV)/bin/ruff check --fix $(SRC)
	$(VENV)/bin/ruff format $(SRC)

## Every benchmark in benchmarks/, with its default arguments.
bench: $(VENV)/.bench-deps $(VENV)/.ray-deps
	@for f in benchmarks/*.py; do echo "== $$f"; \
	  case $$f in *ray_*) PYTHONPATH=$(RAY_SITE) $(PY) $$f;; *) $(PY) $$f;; esac || exit 1; done

docs: $(VENV)/.docs-deps
	$(PY) -m sphinx -b html docs docs/_build/html -q

clean:
	rm -rf $(VENV) $(RAY_SITE) docs/_build .pytest_cache .ruff_cache *.egg-info
