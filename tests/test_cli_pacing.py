"""How fast misses go out from the command line: ``--concurrency``, ``--requests-per-minute``
and ``--tokens-per-minute`` on ``embed`` and ``serve``, down to the provider's limiter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from cachedembed import ConfigurationError
from cachedembed import embedding_functions as efs
from cachedembed.cli import main
from cachedembed.embedding_functions import OpenAIEmbeddingFunction, from_spec
from cachedembed.server import Pacing, Upstream
from cachedembed.stores import close_all
from tests.providers.fakes import serve
from tests.providers.test_openai import OpenAIFake

TEXTS = [f"text number {i}" for i in range(10)]


@pytest.fixture
def openai_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIFake]:
    """An OpenAI-format loopback server, reached through $OPENAI_BASE_URL as a user would."""
    fake = OpenAIFake()
    monkeypatch.setenv("OPENAI_API_KEY", fake.key)
    with serve(fake) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
        yield fake
    close_all()


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every embedding function the CLI builds from its --model spec, to look at afterwards."""
    seen: list[Any] = []

    def spying(spec: str, **limits: Any) -> Any:
        ef = from_spec(spec, **limits)
        seen.append(ef)
        return ef

    monkeypatch.setattr(efs, "from_spec", spying)
    return seen


def test_a_spec_takes_the_rate_limits_of_its_provider() -> None:
    ef = from_spec(
        "openai:text-embedding-3-small", requests_per_minute=3000, tokens_per_minute=1_000_000
    )
    assert isinstance(ef, OpenAIEmbeddingFunction)
    assert (ef.limiter.requests_per_minute, ef.limiter.tokens_per_minute) == (3000, 1_000_000)
    assert "requests_per_minute" not in ef.get_config()  # pacing is not part of the identity
    unlimited = from_spec("openai:text-embedding-3-small")
    assert (unlimited.limiter.requests_per_minute, unlimited.limiter.tokens_per_minute) == (
        None,
        None,
    )


def test_an_in_process_model_refuses_a_rate_limit_by_name() -> None:
    with pytest.raises(ConfigurationError, match="--requests-per-minute and --tokens-per-minute"):
        from_spec("sentence-transformers:all-MiniLM-L6-v2", tokens_per_minute=1000)


def test_embed_sends_the_misses_under_the_given_limits(
    tmp_path: Path, openai_fake: OpenAIFake, built: list[Any]
) -> None:
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "v.npy"
    args = ["embed", str(tmp_path / "in.txt"), "-m", "openai:text-embedding-3-small"]
    args += ["--cache", f"sqlite:///{tmp_path / 'c.db'}", "-o", str(out), "--no-progress"]
    args += ["--concurrency", "3", "--requests-per-minute", "6000", "--tokens-per-minute", "9e6"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "10 texts, 8 dimensions: 0 hits, 10 misses" in result.output
    np.testing.assert_array_equal(np.load(out), openai_fake.expected(TEXTS))
    (ef,) = built
    assert (ef.limiter.requests_per_minute, ef.limiter.tokens_per_minute) == (6000, 9e6)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--requests-per-minute", "0", "not in the range x>0"),
        ("--tokens-per-minute", "-5", "not in the range x>0"),
        ("--tokens-per-minute", "many", "not a valid float"),
        ("--concurrency", "0", "x>=1"),
    ],
)
def test_a_bad_pace_is_one_error_before_anything_is_opened(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    (tmp_path / "in.txt").write_text("one\n")
    cache = tmp_path / "c.db"
    for command in (["embed", str(tmp_path / "in.txt")], ["serve", "-m", "openai:m"]):
        args = [*command, "--cache", f"sqlite:///{cache}", option, value]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and message in result.output and option in result.output
        assert "Traceback" not in result.output
    assert not cache.exists()


def test_embed_refuses_a_rate_limit_for_a_local_model_before_loading_it(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("one\n")
    cache = tmp_path / "c.db"
    args = ["embed", str(tmp_path / "in.txt"), "--cache", f"sqlite:///{cache}"]
    result = CliRunner().invoke(main, [*args, "--requests-per-minute", "60"])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: --model 'default' runs in this process")
    assert not cache.exists()


def test_each_served_model_gets_the_pace_on_its_own(tmp_path: Path) -> None:
    pacing = Pacing(concurrency=6, requests_per_minute=500, tokens_per_minute=2e6)
    cache = f"sqlite:///{tmp_path / 'c.db'}"
    small, large = (
        Upstream.from_option(f"openai:text-embedding-3-{size}", cache, pacing)
        for size in ("small", "large")
    )
    for upstream in (small, large):
        assert upstream.cached.concurrency == 6
        limiter = upstream.cached.ef.limiter
        assert (limiter.requests_per_minute, limiter.tokens_per_minute) == (500, 2e6)
    assert small.cached.ef.limiter is not large.cached.ef.limiter
    default = Upstream.from_option("openai:text-embedding-3-small", cache)
    assert default.cached.concurrency == OpenAIEmbeddingFunction.default_concurrency
    close_all()
