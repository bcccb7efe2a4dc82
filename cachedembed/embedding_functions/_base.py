"""The shape every shipped embedding function shares.

A provider module subclasses :class:`ProviderEmbeddingFunction` and implements two
methods: :meth:`~ProviderEmbeddingFunction.embed_batches`, which sends texts to the
provider in batches within its documented limits and yields each batch's vectors with
the tokens the provider reported, and :meth:`~ProviderEmbeddingFunction.cache_identity`,
which names everything that changes the vectors. The base class supplies Chroma's
``EmbeddingFunction`` protocol (``__call__``, ``embed_query``, ``name``, ``get_config``,
``build_from_config``) on top, and :class:`cachedembed.Cached` uses the batches to write
each one to the cache as soon as it arrives.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np

from ..errors import ConfigurationError, InvalidInputError, ProviderResponseError
from ..keys import ItemKind, Role
from ..usage import estimate_text_tokens
from ._parallel import AsyncScope
from ._registry import register

T = TypeVar("T", bound="ProviderEmbeddingFunction")


class EmbeddedBatch(NamedTuple):
    """One provider response: vectors for ``texts[start : start + len(vectors)]``."""

    start: int
    vectors: np.ndarray
    """float32, shape (n, dim), validated by :func:`as_matrix`."""
    tokens: int | None
    """Input tokens the provider reported for this batch; ``None`` where it reports none."""
    seconds: float | None = None
    """How long its request took (retries and rate-limit waits included), measured where
    it ran; ``None``: the consumer times the gap between batches (sequential embedders)."""


class ProviderEmbeddingFunction(ABC):
    """Base class of the embedding functions in :mod:`cachedembed.embedding_functions`.

    Subclasses set :attr:`provider`, store their constructor arguments so that
    :meth:`get_config` can return them (secrets excluded: keys are read from the
    environment variable named by ``api_key_env_var``), and implement
    :meth:`embed_batches` and :meth:`cache_identity`.
    """

    provider: ClassVar[str]
    """Short provider name: ``openai``, ``cohere``, ... (also the ``--model`` prefix in the CLI)."""

    chroma_name: ClassVar[str | None] = None
    """The Chroma :meth:`name` of a class that shares its :attr:`provider` with another
    (Chroma's second Gemini class); ``None``: ``cachedembed-{provider}``."""

    bypass_cache: bool = False
    """True when vectors depend on the whole batch (Jina late chunking): never cached per text."""

    accepts_images: bool = False
    """True for multimodal functions: :meth:`embed_batches` then also takes images (numpy
    arrays, one kind per call) and embeds them into the same space as texts."""
    default_concurrency: ClassVar[int] = 1
    """Requests :class:`~cachedembed.Cached` sends at once unless told otherwise: 1 for
    in-process models (parallel calls only contend for the same cores)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "provider" in cls.__dict__ or "chroma_name" in cls.__dict__:
            register(cls, as_provider="provider" in cls.__dict__)

    # -- what subclasses implement ------------------------------------------------

    @abstractmethod
    def embed_batches(self, texts: Sequence[str], role: Role) -> Iterator[EmbeddedBatch]:
        """Embed ``texts`` for ``role`` in provider-sized batches, yielding each as it completes.

        Must preserve order (by the response's ``index`` where the provider gives one),
        validate each response with :func:`as_matrix`, and raise
        :class:`~cachedembed.errors.ProviderError` naming the provider on failure.
        """

    def embed_batches_concurrently(
        self, texts: Sequence[str], role: Role, concurrency: int, scope: AsyncScope | None = None
    ) -> Iterator[EmbeddedBatch]:
        """:meth:`embed_batches` with up to ``concurrency`` requests at once, yielded as they
        complete (in any order); with ``scope`` (an async call), requests that can run as
        coroutines run on its event loop. Sequential, in the calling thread, unless the
        provider can do better (an in-process model computes in the engine's worker thread)."""
        return self.embed_batches(texts, role)

    @abstractmethod
    def cache_identity(self, role: Role) -> dict[str, Any]:
        """Everything that changes the vectors for ``role``: ``provider``, ``model`` and parameters.

        Never include secrets, or options that do not change the output (timeouts, devices).
        """

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as JSON, secrets excluded; ``cls(**config)`` rebuilds the function."""

    def check_available(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`~cachedembed.errors.ConfigurationError` now if this function surely
        cannot work (a local model that is not on disk while offline); cheap, loads nothing."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Load what the first call needs (a local model), so it is not timed as provider time."""

    # -- Chroma's EmbeddingFunction protocol ----------------------------------------

    def __call__(self, input: Sequence[Any]) -> list[np.ndarray]:
        return list(self.embed(self.check_input(input), "document"))

    def embed_query(self, input: Sequence[Any]) -> list[np.ndarray]:
        return list(self.embed(self.check_input(input), "query"))

    def check_input(self, input: Any) -> list[Any]:
        """The items of ``input`` (see :func:`check_input`); images only if :attr:`accepts_images`."""
        kind, items = check_input(input)
        if kind == "image" and not self.accepts_images:
            raise InvalidInputError(
                f"{self.provider} embeds texts only; use a multimodal function for images "
                "(OpenCLIPEmbeddingFunction, or a remote one that takes images)"
            )
        return items

    def embed(self, texts: Sequence[str], role: Role) -> np.ndarray:
        """All vectors for ``texts`` as one (n, dim) float32 matrix, without any cache."""
        parts = [batch.vectors for batch in self.embed_batches(texts, role)]
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @classmethod
    def name(cls) -> str:
        return cls.chroma_name or f"cachedembed-{cls.provider}"

    spec_options: ClassVar[Mapping[str, type]] = {}
    """Constructor options a CLI spec may set after ``?`` (``MODEL?name=value&...``), by type."""

    @classmethod
    def from_spec(cls: type[T], value: str) -> T:
        """Build from the part after ``provider:`` in a CLI ``--model`` spec (a model name by
        default, then the :attr:`spec_options` after ``?``)."""
        model, options = cls.parse_spec_options(value)
        return cls(**({"model_name": model} if model else {}), **options)

    @classmethod
    def parse_spec_options(cls, value: str) -> tuple[str, dict[str, Any]]:
        """Split ``MODEL?name=value&...`` into the model and typed :attr:`spec_options`."""
        from urllib.parse import parse_qsl

        if not cls.spec_options:
            return value, {}  # no options: a "?" belongs to the value (a server URL's query)
        model, _, query = value.partition("?")
        options: dict[str, Any] = {}
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise ConfigurationError(
                f"{cls.provider}: cannot read the options {query!r}; write "
                f"{cls.provider}:MODEL?name=value&name=value ({cls.options_help()})"
            ) from None
        for name, text in pairs:
            kind = cls.spec_options.get(name)
            if kind is None:
                raise ConfigurationError(
                    f"{cls.provider}: unknown option {name!r}; options: {cls.options_help()}"
                )
            options[name] = _typed_option(cls.provider, name, text, kind)
        return model, options

    @classmethod
    def options_help(cls) -> str:
        """``name=TYPE, ...`` of :attr:`spec_options`, as ``cachedembed providers`` shows them."""
        kinds = {bool: "true|false", int: "INTEGER", str: "TEXT"}
        return ", ".join(f"{name}={kinds[kind]}" for name, kind in sorted(cls.spec_options.items()))

    @classmethod
    def spec_help(cls) -> str:
        """One line for ``cachedembed providers``: the spec form and the options it takes."""
        return f"{cls.provider}:MODEL_NAME"

    @classmethod
    def spec_syntax(cls) -> str:
        """:meth:`spec_help`, followed by how to pass each option when there are any."""
        if not cls.spec_options:
            return cls.spec_help()
        head = cls.spec_help().split("  ", 1)[0]
        example = head + "?" + cls.options_help().replace(", ", "&")
        return f"{cls.spec_help()}\n    options: {example}"

    @classmethod
    def build_from_config(cls: type[T], config: Mapping[str, Any]) -> T:
        return cls(**config)

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "l2", "ip"]

    @staticmethod
    def validate_config(config: Mapping[str, Any]) -> None:
        return None

    def validate_config_update(
        self, old_config: Mapping[str, Any], new_config: Mapping[str, Any]
    ) -> None:
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


# -- helpers shared by the provider modules ------------------------------------------


def _typed_option(provider: str, name: str, text: str, kind: type) -> Any:
    """A spec option's text as ``kind``; a one-line error names the values it accepts."""
    if kind is bool:
        flag = text.lower()
        if flag in ("true", "1", "yes", "on"):
            return True
        if flag in ("false", "0", "no", "off"):
            return False
        raise ConfigurationError(f"{provider}: option {name} must be true or false, got {text!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigurationError(
                f"{provider}: option {name} must be an integer, got {text!r}"
            ) from None
    return text


def check_texts(input: Any) -> list[str]:
    """Accept a list of ``str`` (or one ``str``); raise :class:`InvalidInputError` otherwise."""
    if isinstance(input, str):
        return [input]
    if input is None:
        raise InvalidInputError("input is None, expected a list of str")
    if isinstance(input, (bytes, bytearray)):
        raise InvalidInputError("input is bytes, expected a list of str (decode it first)")
    try:
        texts = list(input)
    except TypeError:
        raise InvalidInputError(
            f"input is {type(input).__name__}, expected a list of str"
        ) from None
    if not texts:
        raise InvalidInputError("input is an empty list: there is nothing to embed")
    if set(map(type, texts)) == {str}:  # the common case, checked without a Python loop
        return texts
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            hint = " (decode bytes first)" if isinstance(t, (bytes, bytearray)) else ""
            if isinstance(t, np.ndarray):
                hint = " (one call embeds either texts or images: embed them in separate calls)"
            raise InvalidInputError(f"input[{i}] is {type(t).__name__}, expected str{hint}")
    return texts


def check_input(input: Any) -> tuple[ItemKind, list[Any]]:
    """Classify Chroma's ``Embeddable`` input: ``Documents`` (``str``) or ``Images`` (arrays).

    Returns the kind and the items; texts are checked as :func:`check_texts` does, images as
    :func:`check_images`. One call holds one kind: a list mixing texts and images raises
    :class:`InvalidInputError`, as does anything else that is neither.
    """
    if isinstance(input, np.ndarray):
        raise InvalidInputError(
            f"input is one numpy array of shape {input.shape}; pass a list of images "
            "([image], or list(batch) for a stack of them)"
        )
    if isinstance(input, (list, tuple)) and input and isinstance(input[0], np.ndarray):
        return "image", check_images(input)
    texts = check_texts(input)
    return "text", texts


_IMAGE_DTYPE_KINDS = "buif"
"""bool, unsigned, signed and float pixels: what PIL and the image models take."""


def check_images(input: Sequence[Any]) -> list[np.ndarray]:
    """Accept a list of images: 2-D (H x W) or 3-D (H x W x C) numeric numpy arrays.

    Raises :class:`InvalidInputError` naming the first bad item: a text among the images,
    an object or other non-numeric array, the wrong number of dimensions, no pixels, or a
    NaN or infinite value in a float image. Nothing is copied.
    """
    images = list(input)
    for i, image in enumerate(images):
        where = f"input[{i}]"
        if not isinstance(image, np.ndarray):
            kind = "a text" if isinstance(image, str) else type(image).__name__
            raise InvalidInputError(
                f"{where} is {kind} but input[0] is an image: one call embeds either texts "
                "or images, so embed them in separate calls"
            )
        if image.dtype.kind not in _IMAGE_DTYPE_KINDS:
            raise InvalidInputError(
                f"{where} is an image of dtype {image.dtype}; pixels must be numbers "
                "(uint8, or float in [0, 1])"
            )
        if image.ndim not in (2, 3):
            raise InvalidInputError(
                f"{where} is an image of shape {image.shape}; expected height x width or "
                "height x width x channels (2 or 3 dimensions)"
            )
        if image.size == 0:
            raise InvalidInputError(f"{where} is an image of shape {image.shape}: it has no pixels")
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            raise InvalidInputError(f"{where} is an image with NaN or infinite pixel values")
    return images


def as_matrix(provider: str, rows: Any, expected: int, dim: int | None = None) -> np.ndarray:
    """Turn a provider's vectors into a float32 (n, dim) matrix, or raise.

    Raises :class:`ProviderResponseError` (and so nothing is cached) when the count is not
    ``expected``, rows are ragged, empty or not numbers, a value is NaN or infinite, or the
    dimension differs from ``dim`` when given.
    """
    if isinstance(rows, np.ndarray):
        arr = rows
    else:
        if not isinstance(rows, (list, tuple)):
            raise ProviderResponseError(
                provider, f"expected a list of vectors, got {type(rows).__name__}"
            )
        if len(rows) != expected:
            raise ProviderResponseError(provider, f"expected {expected} vectors, got {len(rows)}")
        lengths = {len(r) if isinstance(r, (list, tuple, np.ndarray)) else -1 for r in rows}
        if len(lengths) > 1 or -1 in lengths:
            raise ProviderResponseError(provider, f"ragged vectors (dimensions {sorted(lengths)})")
        try:
            arr = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ProviderResponseError(provider, f"vectors are not numbers ({exc})") from None
    if arr.ndim != 2:
        raise ProviderResponseError(
            provider, f"expected a 2-D array of vectors, got shape {arr.shape}"
        )
    if arr.shape[0] != expected:
        raise ProviderResponseError(provider, f"expected {expected} vectors, got {arr.shape[0]}")
    if arr.shape[1] == 0:
        raise ProviderResponseError(provider, "vectors have dimension 0")
    if dim is not None and arr.shape[1] != dim:
        raise ProviderResponseError(provider, f"expected dimension {dim}, got {arr.shape[1]}")
    if arr.dtype.kind not in "fiu":
        raise ProviderResponseError(provider, f"vectors have dtype {arr.dtype}, expected numbers")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ProviderResponseError(provider, "vectors contain NaN or infinite values")
    return out


def batches(
    texts: Sequence[str],
    max_items: int,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> Iterator[tuple[int, Sequence[str]]]:
    """Split ``texts`` into ``(start, chunk)`` pieces within an item and a token limit.

    Token counts use ``count_tokens`` (default: one token per 4 UTF-8 bytes, a conservative
    estimate for BPE tokenisers on most text). A single text over ``max_tokens`` goes alone;
    the provider then decides (truncate or reject) and its error names the problem.
    """
    if max_items < 1:
        raise ConfigurationError(f"batch size must be at least 1, got {max_items}")
    if max_tokens is None:
        for start in range(0, len(texts), max_items):
            yield start, texts[start : start + max_items]
        return
    count = count_tokens or estimate_text_tokens
    start = 0
    used = 0
    for i, text in enumerate(texts):
        n = count(text)
        if i > start and (i - start >= max_items or used + n > max_tokens):
            yield start, texts[start:i]
            start, used = i, 0
        used += n
    if start < len(texts):
        yield start, texts[start:]


def api_key(explicit: str | None, env_vars: Sequence[str]) -> str | None:
    """The API key from the argument or the first set environment variable; never logged.

    A missing key is not an error here: ``RemoteEmbeddingFunction.require_key`` says so
    on first use (a fully cached workload runs without one)."""
    if explicit:
        return explicit
    for var in env_vars:
        value = os.environ.get(var)
        if value:
            return value
    return None


def check_positive(provider: str, name: str, value: int | None) -> None:
    """Reject an option that must be a positive integer (or unset) before any request."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigurationError(f"{provider}: {name} must be a positive integer, got {value!r}")
