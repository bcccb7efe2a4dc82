"""``cachedembed serve``: option parsing, the exposure check, and a real server process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import requests
from click.testing import CliRunner

from cachedembed.cli import main
from cachedembed.errors import ConfigurationError
from cachedembed.server import parse_model_option
from cachedembed.server.serve import check_exposure, is_loopback

from .harness import scripted_vector

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("openai:text-embedding-3-small", (None, "openai:text-embedding-3-small")),
        (
            "text-embedding-3-small=openai:text-embedding-3-small",
            ("text-embedding-3-small", "openai:text-embedding-3-small"),
        ),
        ("tei:http://gpu-box:8080/?a=b", (None, "tei:http://gpu-box:8080/?a=b")),
        ("default", (None, "default")),
        ("mini=default", ("mini", "default")),
    ],
)
def test_model_options_take_an_optional_alias(
    option: str, expected: tuple[str | None, str]
) -> None:
    assert parse_model_option(option) == expected


def test_an_empty_alias_or_spec_is_refused() -> None:
    for option in ("=openai:x", "alias="):
        with pytest.raises(ConfigurationError, match="ALIAS=PROVIDER:MODEL"):
            parse_model_option(option)


def test_only_loopback_addresses_may_go_without_a_key() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.5", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.4", "gpu-box"))
    check_exposure("0.0.0.0", "key", False)
    check_exposure("0.0.0.0", None, True)
    with pytest.raises(ConfigurationError, match="--allow-public-without-key"):
        check_exposure("0.0.0.0", None, False)


def test_serve_refuses_a_public_bind_without_a_key_before_loading_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CACHEDEMBED_SERVER_API_KEY", raising=False)
    out = CliRunner().invoke(main, ["serve", "--model", "nope:never-built", "--host", "0.0.0.0"])
    assert out.exit_code == 1
    assert "refusing to listen on 0.0.0.0 without an API key" in out.output


def test_serve_runs_a_real_server_process(tmp_path: Path) -> None:
    # The scripted provider is registered by importing the harness before the CLI runs.
    code = "import tests.server.harness; from cachedembed.cli import main; main()"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CACHEDEMBED_SERVER_API_KEY": "k-123"}
    cache = f"sqlite:///{tmp_path / 'c.db'}"
    args = [
        "serve",
        "--model",
        "mine=scripted:m1",
        "--model",
        "scripted:m2@4",
        "--cache",
        cache,
        "--port",
        "0",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(
            r"serving mine, m2@4 on (http://127\.0\.0\.1:\d+) \(cache sqlite:///", line
        )
        assert match, line
        url = match.group(1)
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", headers={"Authorization": "Bearer k-123"}).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="k-123", max_retries=0)
        got = (
            sdk.embeddings.create(model="mine", input="hi", encoding_format="float")
            .data[0]
            .embedding
        )
        assert got == scripted_vector("hi", "m1", 8).tolist()
        assert len(sdk.embeddings.create(model="m2@4", input="hi").data[0].embedding) == 4
        sdk.embeddings.create(model="mine", input="hi")  # a hit, buffered in the server
        assert requests.get(f"{url}/v1/models").status_code == 401
        assert requests.get(f"{url}/healthz").ok  # the probe needs no key
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    # SIGTERM is a clean shutdown: the last request's buffered hit reached the cache.
    stats = CliRunner().invoke(main, ["stats", "--json", "--cache", cache])
    total = json.loads(stats.output)["total"]
    assert (total["texts"], total["hits"], total["misses"]) == (3, 1, 2)


def test_serve_refuses_to_start_an_upstream_without_its_api_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("OPENAI_API_KEY", "CHROMA_OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    cache = f"sqlite:///{tmp_path / 'c.db'}"
    args = ["serve", "--model", "openai:text-embedding-3-small", "--cache", cache, "--port", "0"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 1
    (line,) = out.output.splitlines()  # one line, no traceback
    assert line.startswith("Error: openai: no API key") and "$OPENAI_API_KEY" in line
