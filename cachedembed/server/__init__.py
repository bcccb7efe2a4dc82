"""``cachedembed serve``: an OpenAI- and TEI-compatible HTTP server in front of cached providers.

Any language or tool that speaks the OpenAI embeddings API (the ``openai`` SDKs, Chroma's
JavaScript ``OpenAIEmbeddingFunction``, curl) or Text Embeddings Inference's ``/embed``
shares one cache through it. Needs the ``server`` extra (Starlette, uvicorn,
prometheus-client); nothing here is imported by ``import cachedembed``.
"""

from __future__ import annotations

from .app import create_app
from .routing import Pacing, Upstream, parse_model_option

__all__ = ["Pacing", "Upstream", "create_app", "parse_model_option"]
