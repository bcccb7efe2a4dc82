# Everything a fresh clone needs: `make demo` installs and runs the main job, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test soak lint bench services clean

install: $(STAMP)

# torch first and pinned: 2.13.0 is the CPU build; any other spec pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[all]' -r requirements-dev.txt
	@if command -v npm >/dev/null 2>&1 && [ -f tests/js/package.json ]; then cd tests/js && npm install --no-audit --no-fund --silent; fi
	touch $(STAMP)

# The main job on the embedded default model: embed a file twice, then show what the cache saved.
demo: install
	@mkdir -p .demo
	$(VENV)/bin/cachedembed embed examples/quotes.txt --cache sqlite:///.demo/cache.db --out .demo/vectors.npy
	$(VENV)/bin/cachedembed embed examples/quotes.txt --cache sqlite:///.demo/cache.db --out .demo/vectors.npy
	$(VENV)/bin/cachedembed stats --cache sqlite:///.demo/cache.db

# PostgreSQL and MariaDB for the shared-cache tests (no-ops when already running).
services:
	@bash .ci/services

test: install services
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not soak"

soak: install services
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m soak

lint: install
	$(VENV)/bin/ruff check cachedembed tests bench migrations
	$(VENV)/bin/mypy

bench: install services
	HF_HUB_OFFLINE=1 $(PY) bench/run.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
