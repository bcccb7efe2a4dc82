# Everything a fresh clone needs: `make demo` installs and runs the main job, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# torch pinned: 2.13.0 is the CPU build on this machine's disk; any other spec pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
PIP_VERSION := 26.3
PIP_TOOLS := pip-tools==7.6.2
# The exact versions the suite passed with (`make lock` refreshes them); pyproject.toml keeps loose ranges for users.
LOCK := requirements.lock

# The image tests' own venv: open_clip needs torchvision, whose build must match its torch, and
# no torchvision matches the CPU torch above (its mere presence breaks transformers). So
# tests/images/open_clip run in a venv of their own, torch 2.14.1 + torchvision 0.29.1.
IMAGES_VENV ?= .venv-images
IMAGES_LOCK := requirements-images.lock
IMAGES_STAMP := $(IMAGES_VENV)/.installed

.PHONY: install install-images lock lock-images demo test test-fast check docs soak lint bench services clean

install: $(STAMP)

install-images: $(IMAGES_STAMP)

$(IMAGES_STAMP): pyproject.toml $(IMAGES_LOCK)
	$(PYTHON) -m venv $(IMAGES_VENV)
	$(IMAGES_VENV)/bin/python -m pip install -q pip==$(PIP_VERSION)
	$(IMAGES_VENV)/bin/python -m pip install -q -r $(IMAGES_LOCK)
	$(IMAGES_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(IMAGES_STAMP)

# Re-resolve the image venv (pyproject's `images` extra and requirements-images.in).
lock-images:
	test -x $(IMAGES_VENV)/bin/python || $(PYTHON) -m venv $(IMAGES_VENV)
	$(IMAGES_VENV)/bin/python -m pip install -q $(PIP_TOOLS)
	$(IMAGES_VENV)/bin/pip-compile -q --upgrade --strip-extras --extra images --no-emit-index-url \
		--no-emit-find-links -o $(IMAGES_LOCK) pyproject.toml requirements-images.in

# torch first, on its own, so nothing resolves it to a CUDA build; then the lock (compiled on
# the CI's Python 3.11); then the project, whose dependencies the lock already satisfies there
# (on 3.10 pip adds what only 3.10 needs, such as tomli).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q pip==$(PIP_VERSION)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -r $(LOCK)
	$(PIP) install -q -e .
	@if command -v npm >/dev/null 2>&1 && [ -f tests/js/package.json ]; then cd tests/js && npm install --no-audit --no-fund --silent; fi
	touch $(STAMP)

# Re-resolve every dependency (pyproject's `all` extra, requirements-dev.txt, torch) to the newest allowed versions.
# Run `make test` afterwards and commit the lock only when it passes.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(PIP_TOOLS)
	echo '$(TORCH)' | $(VENV)/bin/pip-compile -q --upgrade --strip-extras --extra all --no-emit-index-url \
		--no-emit-find-links -o $(LOCK) pyproject.toml requirements-dev.txt -

# The main job on the embedded default model: embed a file twice, then show what the cache saved.
demo: install
	@mkdir -p .demo
	$(VENV)/bin/cachedembed embed examples/quotes.txt --cache sqlite:///.demo/cache.db --out .demo/vectors.npy
	$(VENV)/bin/cachedembed embed examples/quotes.txt --cache sqlite:///.demo/cache.db --out .demo/vectors.npy
	$(VENV)/bin/cachedembed stats --cache sqlite:///.demo/cache.db

# PostgreSQL and MariaDB for the shared-cache tests (no-ops when already running).
services:
	@bash .ci/services

# tests/images/test_open_clip_suite.py runs tests/images/open_clip inside $(IMAGES_VENV).
test: install install-images services
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not soak" --durations=15

# The contributor's loop: no process spawning, no real model, no servers (tests marked `slow`).
# Two xdist workers (more gain nothing on 2 cores); bytecode caching on, even where the
# environment turns it off, so pytest does not re-rewrite every test module on each run.
test-fast: install
	PYTHONDONTWRITEBYTECODE= HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 -m "not soak and not slow" -p no:cacheprovider

# Lint, formatting and types (mypy checks for the lowest supported Python, see pyproject.toml).
check: install
	$(VENV)/bin/ruff check cachedembed tests bench migrations
	$(VENV)/bin/ruff format --check cachedembed tests bench migrations
	$(VENV)/bin/mypy

soak: install services
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m soak

lint: install
	$(VENV)/bin/ruff check cachedembed tests bench migrations
	$(VENV)/bin/mypy

bench: install services
	HF_HUB_OFFLINE=1 $(PY) bench/run.py

clean:
	rm -rf $(VENV) $(IMAGES_VENV) .demo .pytest_cache .mypy_cache .ruff_cache

# Re-run every console block of README.md and docs/ and rewrite the outputs shown there.
docs: install services
	HF_HUB_OFFLINE=1 $(PY) tools/docsync.py
