"""Voyage AI embeddings: ``POST {api_base}/v1/embeddings`` over plain JSON.

Same constructor as Chroma's ``VoyageAIEmbeddingFunction`` (which needs the ``voyageai``
SDK; this one speaks the documented REST format with ``requests``). Documents are sent
with ``input_type="document"`` and queries with ``"query"`` unless ``input_type`` is
given. Batches hold at most 1,000 texts and stay under the model's documented token cap
per request (1M for the lite models, 320K for voyage-3/3.5/4/2, 120K for the rest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..keys import Role

if TYPE_CHECKING:
    from typing_extensions import Unpack

from ._remote import JsonEmbeddingFunction, RemoteOptions, without_none

DEFAULT_BASE_URL = "https://api.voyageai.com"

# Documented tokens per request by model; unknown models get the smallest cap.
_TOKEN_CAPS = (
    (("-lite",), 1_000_000),
    (("voyage-4", "voyage-3.5", "voyage-3", "voyage-2"), 320_000),
)
_DEFAULT_TOKEN_CAP = 120_000
_LARGE = ("-large", "-code", "-finance", "-law", "-multilingual")


def token_cap(model_name: str) -> int:
    """Most tokens one request may carry for ``model_name``, per Voyage's API reference."""
    if any(marker in model_name for marker in _LARGE):
        return _DEFAULT_TOKEN_CAP
    for prefixes, cap in _TOKEN_CAPS:
        if any(p in model_name for p in prefixes):
            return cap
    return _DEFAULT_TOKEN_CAP


class VoyageAIEmbeddingFunction(JsonEmbeddingFunction):
    """Voyage AI ``/v1/embeddings`` (``voyage-3.5``, ``voyage-3-large``, ``voyage-code-3``, ...).

    Args:
        api_key: The key; better read from ``$VOYAGE_API_KEY`` (or ``api_key_env_var``).
        model_name: Chroma's default ``voyage-large-2`` is kept.
        api_key_env_var: Environment variable holding the key.
        input_type: Force ``"document"``, ``"query"`` for both roles; default: by role.
        truncation: Truncate over-long inputs (``True``, the API default) or fail.
        output_dimension: Shorter vectors where the model supports them.
        output_dtype: ``float`` (default), ``int8``, ``uint8``, ``binary``, ``ubinary``.
        api_base: Another server (default ``https://api.voyageai.com``).
        retry: Retry policy.
        requests_per_minute, tokens_per_minute: This instance\'s rate limits (see
            :class:`~cachedembed.embedding_functions.RateLimiter`).

    Model, input type, truncation, output dimension and dtype form the cache namespace.
    """

    provider = "voyage"
    path = "/v1/embeddings"
    default_base_url = DEFAULT_BASE_URL
    max_batch = 1000
    # The constructor's arguments, kept by keep_options() (typed here for mypy).
    model_name: str
    api_key_env_var: str
    input_type: str | None
    truncation: bool
    output_dimension: int | None
    output_dtype: str | None
    rejects_empty = True

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str = "voyage-large-2",
        api_key_env_var: str = "VOYAGE_API_KEY",
        input_type: str | None = None,
        truncation: bool = True,
        output_dimension: int | None = None,
        output_dtype: str | None = None,
        api_base: str | None = None,
        **remote: Unpack[RemoteOptions],
    ) -> None:
        super().__init__(**remote)
        self.keep_options(locals())
        self.max_batch_tokens = token_cap(model_name)
        self.resolve_key(api_key, [api_key_env_var, "CHROMA_VOYAGE_API_KEY"])

    @classmethod
    def spec_help(cls) -> str:
        return "voyage:MODEL_NAME  (e.g. voyage-3.5; key $VOYAGE_API_KEY)"

    def params(self, role: Role) -> dict[str, Any]:
        params = {
            "model": self.model_name,
            "input_type": self.input_type or role,
            "truncation": self.truncation,
            "output_dimension": self.output_dimension,
            "output_dtype": self.output_dtype,
        }
        return without_none(params)
