"""Read-only commands never create a cache: pointed at one that does not exist, they say
"no cache at ..." and leave no file, folder or table behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cachedembed.cli import main
from tests.stores.servers import server_database

READ_ONLY = {
    "stats": ["stats"],
    "stats --by day": ["stats", "--by", "day"],
    "models": ["models"],
    "ls": ["ls"],
    "export": ["export", "out.jsonl.gz"],
    "verify": ["verify"],
    "verify --fix": ["verify", "--fix"],
}


@pytest.mark.parametrize("command", list(READ_ONLY))
@pytest.mark.parametrize("backend", ["sqlite", "diskcache"])
def test_a_read_only_command_on_a_missing_local_cache_creates_nothing(
    command: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    where = tmp_path / ("nested/cache.db" if backend == "sqlite" else "nested/dc")
    url = f"sqlite:///{where}" if backend == "sqlite" else f"diskcache://{where}"
    before = set(tmp_path.rglob("*"))
    result = CliRunner().invoke(main, [*READ_ONLY[command], "--cache", url])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.startswith(
        f"Error: no cache at {where}: check --cache or $CACHEDEMBED_URL"
    )
    assert len(result.output.splitlines()) == 1
    assert set(tmp_path.rglob("*")) == before


def test_the_default_cache_is_not_created_by_stats(tmp_path: Path) -> None:
    default = tmp_path / "default-cache.db"  # $CACHEDEMBED_URL of the test environment
    result = CliRunner().invoke(main, ["stats"])
    assert result.output == (
        f"Error: no cache at {default}: check --cache or $CACHEDEMBED_URL "
        "(`cachedembed embed` or `import` creates one)\n"
    )
    assert not default.exists()


@pytest.fixture(params=["postgresql", "mariadb"])
def empty_database(request: pytest.FixtureRequest) -> Iterator[str]:
    with server_database(request.param) as url:
        yield url


def tables(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", list(READ_ONLY))
def test_a_read_only_command_on_a_database_without_a_cache_creates_no_tables(
    command: str, empty_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*READ_ONLY[command], "--cache", empty_database])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.startswith(
        f"Error: no cache at {empty_database} (the database has no cachedembed tables)"
    )
    assert tables(empty_database) == []
    assert list(tmp_path.iterdir()) == []  # no export file either


@pytest.mark.slow  # `embed` loads the real default model
def test_a_read_only_command_on_an_existing_cache_still_reads_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    runner = CliRunner()
    assert runner.invoke(main, ["embed", str(tmp_path / "in.txt"), "--cache", url]).exit_code == 0
    for args in READ_ONLY.values():
        out = tmp_path / "out.jsonl.gz"
        argv = [*args[:1], str(out), *args[2:]] if args[0] == "export" else args
        result = runner.invoke(main, [*argv, "--cache", url])
        assert result.exit_code == 0, (args, result.output)
