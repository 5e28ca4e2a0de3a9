PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test test-slow lint sweep prepare bench clean

setup: $(STAMP)

# Re-installs only when the dependency list changes.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(PY) -m flake8 lightning_modules datamodules experiments tests benchmarks
	$(PY) -m isort --check-only lightning_modules datamodules experiments tests benchmarks

sweep: setup
	$(PY) -m experiments.sweep $(ARGS)

prepare: setup
	$(PY) -m experiments.prepare $(ARGS)

clean:
	rm -rf outputs cache .pytest_cache
