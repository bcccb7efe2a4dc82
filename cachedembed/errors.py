"""Exceptions raised by cachedembed. Every message names the problem and, where one exists, the remedy."""

from __future__ import annotations

from collections.abc import Callable


class CachedEmbedError(Exception):
    """Base class for every error cachedembed raises on purpose."""


class InvalidInputError(CachedEmbedError, ValueError):
    """The input to an embedding call is not a list of texts the cache can key.

    Raised before any lookup or provider call, so nothing is written or billed.
    """


class ConfigurationError(CachedEmbedError, ValueError):
    """The wrapper or a provider was configured in a way that cannot work (missing key, bad option)."""


class ProviderError(CachedEmbedError):
    """The embedding provider failed; the message names the provider, the HTTP status and its message.

    Batches that completed before the failure are already cached.
    """

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool = False,
    ) -> None:
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable
        self.message = message
        where = f"{provider} returned HTTP {status}" if status is not None else f"{provider} failed"
        super().__init__(f"{where}: {message}")

    def redacted(self, redact: Callable[[str], str]) -> ProviderError:
        """A copy of this error with ``redact`` applied to its text, detached from any chain.

        The copy has no ``__cause__``/``__context__``: the original (whose text may quote a
        credential) is not reachable from it. Raise it outside the ``except`` block that
        caught the original, or Python links that one back as its context.
        """
        clean = type(self).__new__(type(self))
        clean.__dict__.update(self.__dict__)
        clean.message = redact(self.message)
        clean.args = tuple(redact(str(a)) for a in self.args)
        return clean


class ProviderResponseError(ProviderError):
    """The provider answered, but with vectors that cannot be right (wrong count, ragged, NaN/inf).

    Nothing from such a response is cached.
    """

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(provider, f"malformed response: {message}")


class StoreError(CachedEmbedError):
    """The cache storage cannot be opened or read; the message says how to repair it."""


class PendingBatchError(CachedEmbedError):
    """Texts asked for synchronously are in a batch job not yet collected (see ``Cached(pending_batches=...)``)."""
