"""A database password in the cache URL, in the userinfo or as ``?password=``, is never shown:
not in ``store.url``, ``repr``, errors, ``cachedembed stats``, export files or Chroma's config."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cachedembed import Cached
from cachedembed.cli import main
from cachedembed.errors import StoreError
from cachedembed.stores import close_all, open_store, redact_url
from tests.conftest import FakeEF
from tests.stores.servers import server_database

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("url", "masked", "dropped"),
    [
        (
            f"postgresql+psycopg://bob:{SECRET}@db.example:5432/cache",
            "postgresql+psycopg://bob:***@db.example:5432/cache",
            "postgresql+psycopg://bob@db.example:5432/cache",
        ),
        (
            f"postgresql+psycopg://bob@db.example/cache?password={SECRET}&sslmode=require",
            "postgresql+psycopg://bob@db.example/cache?password=***&sslmode=require",
            "postgresql+psycopg://bob@db.example/cache?sslmode=require",
        ),
        (
            f"mysql+pymysql://root@db.example/cache?passwd={SECRET}&charset=utf8mb4",
            "mysql+pymysql://root@db.example/cache?charset=utf8mb4&passwd=***",
            "mysql+pymysql://root@db.example/cache?charset=utf8mb4",
        ),
        ("diskcache:///tmp/dc", "diskcache:///tmp/dc", "diskcache:///tmp/dc"),
    ],
)
def test_redact_url_masks_or_drops_every_password(url: str, masked: str, dropped: str) -> None:
    assert redact_url(url) == masked
    assert redact_url(url, drop=True) == dropped


def test_a_query_password_is_hidden_everywhere_the_url_appears(tmp_path: Path) -> None:
    with server_database("postgresql") as url:
        # The test server trusts loopback: the password is accepted and ignored.
        with_password = f"{url}?password={SECRET}"
        wrapper = Cached(FakeEF(), cache=with_password)
        wrapper(["hello"])
        assert wrapper.store.url == f"{url}?password=***"
        assert SECRET not in repr(wrapper)
        assert SECRET not in repr(wrapper.store.engine)  # as logged, or shown in a traceback
        config = json.dumps(wrapper.get_config())
        assert SECRET not in config and "password" not in config  # what Chroma persists

        stats = CliRunner().invoke(main, ["stats", "--cache", with_password])
        assert stats.exit_code == 0, stats.output
        assert SECRET not in stats.output and "password=***" in stats.output

        export = tmp_path / "x.jsonl.gz"
        done = CliRunner().invoke(main, ["export", "--cache", with_password, str(export)])
        assert done.exit_code == 0, done.output
        text = gzip.decompress(export.read_bytes()).decode()
        assert (
            SECRET not in text and json.loads(text.splitlines()[0])["source"] == wrapper.store.url
        )
        close_all()


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://postgres@127.0.0.1:1/nothing?password={SECRET}",
        f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/nothing",
        f"mysql+pymysql://root@127.0.0.1:1/nothing?password={SECRET}",
    ],
)
def test_a_connection_failure_names_the_host_but_not_the_password(url: str) -> None:
    with pytest.raises(StoreError) as info:
        open_store(url)
    message = str(info.value)
    assert SECRET not in message
    assert "127.0.0.1:1" in message and "Connection refused" in message
    result = CliRunner().invoke(main, ["models", "--cache", url])
    assert result.exit_code == 1 and SECRET not in result.output
    assert result.output.startswith("Error: cache ") and len(result.output.splitlines()) == 1


def test_a_connection_failure_is_one_sentence_then_the_remedy() -> None:
    # redis-py ends its message with a full stop ("Connection refused."): never "..".
    with pytest.raises(StoreError) as info:
        open_store(f"redis://:{SECRET}@127.0.0.1:1/0")
    message = str(info.value)
    assert "127.0.0.1:1" in message and SECRET not in message
    assert "Connection refused. Remedy: " in message and ".." not in message


def test_a_short_password_is_masked_without_mangling_the_words_around_it() -> None:
    with pytest.raises(StoreError) as info:
        open_store("postgresql+psycopg://u:p@127.0.0.1:1/nothing")
    assert "port 1 failed" in str(info.value)
