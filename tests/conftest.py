"""Shared fixtures: isolated environment, deterministic fake embedding functions, cache URLs per backend."""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xxhash
from _pytest.mark.expression import Expression

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def fake_vector(text: str, dim: int = 8, salt: str = "") -> np.ndarray:
    """A deterministic float32 vector for ``text`` (full 32-bit patterns, not round numbers)."""
    seed = xxhash.xxh64_intdigest((salt + text).encode("utf-8", "surrogatepass"))
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class FakeEF:
    """A Chroma-protocol embedding function that records every call it receives."""

    def __init__(self, dim: int = 8, model: str = "fake-1", query_salt: str = "q:") -> None:
        self.dim = dim
        self.model = model
        self.query_salt = query_salt
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        with self._lock:
            self.calls.append(list(input))
        return [fake_vector(t, self.dim, self.model) for t in input]

    def embed_query(self, input: list[str]) -> list[np.ndarray]:
        with self._lock:
            self.calls.append(list(input))
        return [fake_vector(t, self.dim, self.model + self.query_salt) for t in input]

    @staticmethod
    def name() -> str:
        return "fake"

    def get_config(self) -> dict[str, object]:
        return {"model": self.model, "dim": self.dim}

    @property
    def texts_embedded(self) -> list[str]:
        return [t for call in self.calls for t in call]


@pytest.fixture(scope="session", autouse=True)
def _server_databases() -> Iterator[None]:
    """Drop the PostgreSQL and MariaDB databases the session made (tests/stores/servers.py)."""
    yield
    from tests.stores.servers import close_pools

    close_pools()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test touches the user's cache or config folders, and shared stores never leak between tests."""
    monkeypatch.setenv("CACHEDEMBED_URL", f"sqlite:///{tmp_path / 'default-cache.db'}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    monkeypatch.delenv("CACHEDEMBED_PRICE", raising=False)
    monkeypatch.delenv("CACHEDEMBED_PRICES", raising=False)
    yield
    from cachedembed.stores import close_all

    close_all()


@pytest.fixture
def fake_ef() -> FakeEF:
    return FakeEF()


@pytest.fixture(params=["sqlite", "diskcache", "memory", "redis"])
def cache_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh cache URL for each local backend, and for Redis (a fresh key prefix)."""
    if request.param == "redis":
        from tests.stores.servers import redis_prefix

        with redis_prefix() as url:
            yield url
        return
    yield {
        "sqlite": f"sqlite:///{tmp_path / 'cache.db'}",
        "diskcache": f"diskcache://{tmp_path / 'diskcache'}",
        "memory": f"memory://{tmp_path.name}",
    }[request.param]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cache.db'}"


@pytest.fixture(params=["sqlite", "diskcache", "redis"])
def disk_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh cache URL for each persistent backend (management and accounting tests)."""
    if request.param == "redis":
        from tests.stores.servers import redis_prefix

        with redis_prefix() as url:
            yield url
        return
    yield {
        "sqlite": f"sqlite:///{tmp_path / 'cache.db'}",
        "diskcache": f"diskcache://{tmp_path / 'dc'}",
    }[request.param]


@pytest.fixture
def billing_price(monkeypatch: pytest.MonkeyPatch) -> None:
    """Price the billing test provider's model through ``$CACHEDEMBED_PRICE``, as a user would."""
    from tests.billing import PRICE_ENV

    monkeypatch.setenv("CACHEDEMBED_PRICE", PRICE_ENV)


# Modules whose tests spawn processes, load a real model, drive a browser or start servers
# (real HTTP servers, private redis-server instances): `make test-fast` leaves them out.
# A single test of that kind in another module carries `@pytest.mark.slow` itself.
SLOW_MODULES = frozenset(
    {
        "adapters/test_dispatch.py",
        "adapters/test_llamaindex.py",
        "adapters/test_sentence_transformers.py",
        "providers/test_instructor.py",
        "providers/test_sentence_transformer.py",
        "reliability/test_chroma_model_guard.py",
        "reliability/test_concurrency.py",
        "reliability/test_crash.py",
        "reliability/test_durability.py",
        "reliability/test_fleet_pays_once.py",
        "reliability/test_import_is_all_or_nothing.py",
        "reliability/test_schema_upgrades.py",
        "stores/test_leases.py",
        "stores/test_redis.py",
        "stores/test_sql_shared.py",
        "stores/test_sqlite_reader.py",
        "test_chroma.py",
        "test_cli.py",
        "test_cli_errors.py",
        "test_cli_manage.py",
        "test_docs.py",
    }
)
SLOW_FOLDERS = ("providers/", "server/")
# Modules of a slow folder that stay in the fast loop (the folder is then entered, the rest skipped).
FAST_MODULES = frozenset({"providers/test_identity_pins.py"})


TESTS = Path(__file__).parent


def _is_slow(path: Path) -> bool:
    """Whether ``path`` is a slow module, or a slow folder (as collection meets it, before its files)."""
    where = path.relative_to(TESTS).as_posix()
    if where in FAST_MODULES:
        return False
    if f"{where}/" in SLOW_FOLDERS:
        return not any(module.startswith(f"{where}/") for module in FAST_MODULES)
    return where in SLOW_MODULES or where.startswith(SLOW_FOLDERS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_slow(item.path):
            item.add_marker(pytest.mark.slow)


class _MarkKwargs(Exception):
    """The -m expression asks for a marker's arguments, which no truth table over names settles."""


def _selects(expression: Expression, present: set[str]) -> bool:
    """Whether ``expression`` selects a test whose markers are ``present`` (names only)."""

    def matcher(name: str, /, **kwargs: object) -> bool:
        if kwargs:
            raise _MarkKwargs
        return name in present

    return expression.evaluate(matcher)


@functools.cache
def _deselects_every_slow_test(markexpr: str) -> bool:
    """Whether ``-m markexpr`` is false for every test marked slow, whatever its other markers.

    Checked over every assignment of the expression's other marker names, so ``not slow``
    qualifies and ``slow or soak`` or ``soak`` (a slow test may also be a soak one) do not.
    """
    expression = Expression.compile(markexpr)
    others = sorted(expression.idents() - {"slow"})
    try:
        return not any(
            _selects(expression, {"slow", *(n for n, on in zip(others, values, strict=True) if on)})
            for values in itertools.product((False, True), repeat=len(others))
        )
    except _MarkKwargs:
        return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip importing the slow modules when ``-m`` deselects them anyway.

    They import sentence-transformers, llama-index, chromadb and the server stack: collecting
    them cost `make test-fast` about 15 s, for tests it then deselected.
    """
    markexpr = config.option.markexpr
    if not markexpr or collection_path == TESTS or not collection_path.is_relative_to(TESTS):
        return None
    if _is_slow(collection_path) and _deselects_every_slow_test(markexpr):
        return True
    return None
