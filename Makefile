PYTHON ?= python3.11
VENV   ?= .venv
LOCK   ?= requirements.lock
# Another PyTorch build of the locked versions (a CUDA 12.x or CPU-only wheel index), e.g.
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128
# Everything else still comes from the lock, hash-checked. See README, "Install". The
# index is remembered in the venv, so a later re-install (a changed lock) uses it again.
TORCH_INDEX ?= $(shell cat $(VENV)/torch-index 2>/dev/null)
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test test-slow lint lock check-lock sweep prepare bench clean mutate

setup: $(STAMP)

# Installs exactly the lock (hash-checked, no resolution), then the project itself without
# dependencies, then checks that the compiled parts load. Re-runs when the lock changes.
$(STAMP): $(LOCK) setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
ifeq ($(strip $(TORCH_INDEX)),)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
else
	$(PYTHON) -m experiments.check_lock --without-torch $(LOCK) > $(VENV)/lock-without-torch.txt
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(VENV)/lock-without-torch.txt
	$(PY) -m pip install --quiet --index-url $(TORCH_INDEX) \
		$$($(PYTHON) -m experiments.check_lock --torch-pins $(LOCK))
	echo $(TORCH_INDEX) > $(VENV)/torch-index
endif
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m experiments.check_install
	touch $(STAMP)

# Regenerates the lock from setup.cfg. Versions already pinned are kept (uv prefers the
# existing pins), so the same inputs give the same file; `make lock UPGRADE=1` moves every
# package to the newest release its range allows. Run `make test` before committing it.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile setup.cfg --extra dev --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --generate-hashes --quiet \
		--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) -o $(LOCK).new
	cmp -s $(LOCK).new $(LOCK) && rm $(LOCK).new || mv $(LOCK).new $(LOCK)
	$(PYTHON) -m experiments.check_lock $(LOCK)

# setup.cfg and the lock agree: every requirement is pinned within its range, and every
# package the lock pins for the project is still required. Needs nothing installed.
check-lock:
	$(PYTHON) -m experiments.check_lock $(LOCK)

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

# Mutation testing of the protocol modules (tests/mutate.py): not part of `make test` or CI.
mutate: setup
	$(PY) -m tests.mutate $(ARGS)
