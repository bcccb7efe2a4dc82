"""Every remote provider has one shape: a lazy ``client`` property, config keys declared
once by the constructor, one "no API key" error, and no import of the package from its base."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

from cachedembed import embedding_functions as functions
from cachedembed.embedding_functions._remote import RemoteEmbeddingFunction, RemoteOptions
from cachedembed.errors import ConfigurationError

KEYED = {
    "OpenAIEmbeddingFunction": {},
    "CohereEmbeddingFunction": {},
    "GoogleGeminiEmbeddingFunction": {},
    "GoogleGenerativeAiEmbeddingFunction": {},
    "JinaEmbeddingFunction": {},
    "VoyageAIEmbeddingFunction": {},
    "HuggingFaceEmbeddingFunction": {},
}
REMOTE = {
    **KEYED,
    "OllamaEmbeddingFunction": {},
    "HuggingFaceEmbeddingServer": {"url": "http://127.0.0.1:9"},
}


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if "KEY" in var or "TOKEN" in var or var.endswith(("_BASE_URL", "_API_URL", "_HOST")):
            monkeypatch.delenv(var)


@pytest.mark.parametrize("name", sorted(REMOTE))
def test_client_is_a_lazy_property_built_once(name: str) -> None:
    cls: Any = getattr(functions, name)
    assert isinstance(inspect.getattr_static(cls, "client"), property)
    ef = cls(**REMOTE[name], **({"api_key": "k"} if name in KEYED else {}))
    assert ef._client is None  # nothing built (no SDK imported for it) before first use
    assert ef.client is ef.client


@pytest.mark.parametrize("name", sorted(REMOTE))
def test_config_keys_are_the_constructor_arguments(name: str) -> None:
    cls: Any = getattr(functions, name)
    shared = set(RemoteOptions.__annotations__)
    named = [
        p for p in inspect.signature(cls).parameters if p not in shared | {"api_key", "remote"}
    ]
    ef = cls(**REMOTE[name], **({"api_key": "k"} if name in KEYED else {}))
    assert list(ef.get_config()) == named


def test_an_added_constructor_argument_is_kept_and_persisted_without_more_code() -> None:
    class Tuned(functions.VoyageAIEmbeddingFunction):
        def __init__(
            self, api_key: str | None = None, flavour: str = "plain", **remote: Any
        ) -> None:
            super().__init__(api_key=api_key, **remote)
            self.keep_options(locals())

    ef = Tuned(api_key="k", flavour="salty")
    assert ef.flavour == "salty"  # type: ignore[attr-defined]
    assert ef.get_config() == {"flavour": "salty"}
    assert "k" not in ef.get_config().values()


@pytest.mark.parametrize("name", sorted(KEYED))
def test_a_missing_key_is_one_error_on_first_use(name: str) -> None:
    ef: RemoteEmbeddingFunction = getattr(functions, name)()  # building needs no key
    with pytest.raises(
        ConfigurationError, match=rf"^{ef.provider}: no API key; pass api_key=\.\.\. or set \$"
    ):
        ef.client  # noqa: B018


def test_the_base_does_not_import_its_package() -> None:
    package = Path(functions.__file__).parent
    for module in ("_base.py", "_registry.py", "_remote.py", "_http.py"):
        tree = ast.parse((package / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
                pytest.fail(f"{module} imports its package: from . import {node.names[0].name}")
