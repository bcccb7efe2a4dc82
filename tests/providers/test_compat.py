"""The remote provider classes as drop-in replacements: Chroma's argument names, CLI specs, lazy imports."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from cachedembed.embedding_functions import from_spec, providers, registered

ROOT = Path(__file__).resolve().parents[2]

# our class -> (Chroma module, Chroma class)
CHROMA = {
    "OpenAIEmbeddingFunction": ("openai_embedding_function", "OpenAIEmbeddingFunction"),
    "JinaEmbeddingFunction": ("jina_embedding_function", "JinaEmbeddingFunction"),
    "VoyageAIEmbeddingFunction": ("voyageai_embedding_function", "VoyageAIEmbeddingFunction"),
    "OllamaEmbeddingFunction": ("ollama_embedding_function", "OllamaEmbeddingFunction"),
    "CohereEmbeddingFunction": ("cohere_embedding_function", "CohereEmbeddingFunction"),
    "GoogleGeminiEmbeddingFunction": ("google_embedding_function", "GoogleGeminiEmbeddingFunction"),
    "GoogleGenerativeAiEmbeddingFunction": (
        "google_embedding_function",
        "GoogleGenerativeAiEmbeddingFunction",
    ),
    "HuggingFaceEmbeddingFunction": (
        "huggingface_embedding_function",
        "HuggingFaceEmbeddingFunction",
    ),
    "HuggingFaceEmbeddingServer": ("huggingface_embedding_function", "HuggingFaceEmbeddingServer"),
    "InstructorEmbeddingFunction": ("instructor_embedding_function", "InstructorEmbeddingFunction"),
}


@pytest.mark.parametrize("name", sorted(CHROMA))
def test_accepts_every_chroma_argument_by_name(name: str) -> None:
    module, cls_name = CHROMA[name]
    chroma_cls = getattr(
        importlib.import_module(f"chromadb.utils.embedding_functions.{module}"), cls_name
    )
    ours = getattr(importlib.import_module("cachedembed.embedding_functions"), name)
    theirs = [p for p in inspect.signature(chroma_cls.__init__).parameters if p != "self"]
    mine = inspect.signature(ours.__init__).parameters
    assert [p for p in theirs if p not in mine] == []
    # Positional order matches too, so positional calls keep working.
    positional = [
        p for p in mine if p != "self" and mine[p].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    assert positional[: len(theirs)] == theirs


@pytest.mark.parametrize(
    "spec,cls,model",
    [
        ("openai:text-embedding-3-small", "OpenAIEmbeddingFunction", "text-embedding-3-small"),
        ("jina:jina-embeddings-v3", "JinaEmbeddingFunction", "jina-embeddings-v3"),
        ("voyage:voyage-3", "VoyageAIEmbeddingFunction", "voyage-3"),
        ("ollama:nomic-embed-text", "OllamaEmbeddingFunction", "nomic-embed-text"),
        ("cohere:embed-english-v3.0", "CohereEmbeddingFunction", "embed-english-v3.0"),
        ("gemini:gemini-embedding-001", "GoogleGeminiEmbeddingFunction", "gemini-embedding-001"),
        (
            "huggingface:BAAI/bge-small-en-v1.5",
            "HuggingFaceEmbeddingFunction",
            "BAAI/bge-small-en-v1.5",
        ),
        (
            "instructor:hkunlp/instructor-base",
            "InstructorEmbeddingFunction",
            "hkunlp/instructor-base",
        ),
    ],
)
def test_cli_specs(spec: str, cls: str, model: str) -> None:
    ef = from_spec(spec)
    assert type(ef).__name__ == cls and ef.model_name == model  # type: ignore[attr-defined]
    assert registered(ef.name()) is type(ef)
    assert type(ef).spec_help().startswith(spec.split(":")[0] + ":")


def test_listed_as_providers() -> None:
    assert {
        "openai",
        "jina",
        "voyage",
        "ollama",
        "cohere",
        "gemini",
        "huggingface",
        "tei",
        "instructor",
    } <= set(providers())


def test_provider_modules_import_no_sdk_or_http_stack() -> None:
    code = (
        "import sys\n"
        "from cachedembed.embedding_functions import openai, jina, voyage, ollama\n"
        "from cachedembed.embedding_functions import cohere, google, huggingface, instructor\n"
        "openai.OpenAIEmbeddingFunction(api_key='k'); jina.JinaEmbeddingFunction(api_key='k')\n"
        "cohere.CohereEmbeddingFunction(api_key='k'); google.GoogleGeminiEmbeddingFunction(api_key='k')\n"
        "huggingface.HuggingFaceEmbeddingServer('http://127.0.0.1:1'); instructor.InstructorEmbeddingFunction()\n"
        "sdks = ('openai', 'cohere', 'google.genai', 'httpx', 'httpx2', 'requests', 'torch', 'sentence_transformers', 'chromadb')\n"
        "heavy = [m for m in sdks if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
