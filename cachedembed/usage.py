"""Usage counters and token accounting: what a call cost and what the cache saved.

Counters are kept per namespace and per UTC day (``day`` = days since 1970-01-01), and
are only ever *added* to, so many writers can merge them with atomic increments.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads on first use: `cachedembed stats` never needs it
    import numpy as np

SECONDS_PER_DAY = 86_400


def today() -> int:
    """The current UTC day number, the granularity of stats and last-use tracking."""
    return int(time.time()) // SECONDS_PER_DAY


_EPOCH = datetime.date(1970, 1, 1)
_FIRST_DAY = (datetime.date.min - _EPOCH).days
"""The earliest day a date can name (0001-01-01)."""


def day_iso(day: int) -> str:
    """A UTC day number as ``YYYY-MM-DD``."""
    return (_EPOCH + datetime.timedelta(days=day)).isoformat()


def parse_day(text: str) -> int:
    """``YYYY-MM-DD`` as a UTC day number; ``ValueError`` if it is not a date."""
    return (datetime.date.fromisoformat(text) - _EPOCH).days


def parse_days_ago(text: str, *, now: int | None = None) -> int:
    """The first UTC day of a window: ``7d`` (the last 7 days, today included), ``2w``,
    or a date ``2026-11-01``. Raises ``ValueError`` with a readable message otherwise.
    """
    value = text.strip().lower()
    current = today() if now is None else now
    for suffix, scale in (("d", 1), ("w", 7)):
        if value.endswith(suffix) and value[:-1].isdigit():
            day = current - int(value[:-1]) * scale + 1
            if day < _FIRST_DAY:
                raise ValueError(
                    f"{text!r} reaches back before the year 1: give at most "
                    f"{current - _FIRST_DAY + 1}d, or leave the option out for all days"
                )
            return day
    try:
        return parse_day(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a number of days (7d, 2w) nor a date (2026-11-01)"
        ) from None


@dataclass
class UsageDelta:
    """Counters added to one (namespace, day) stats row.

    ``texts`` is not stored: it is always ``hits + misses``. Token counts include estimates;
    the ``*_estimated`` fields say how many of them are estimates rather than provider-reported.
    """

    calls: int = 0
    hits: int = 0
    misses: int = 0
    provider_calls: int = 0
    provider_seconds: float = 0.0
    tokens_embedded: int = 0
    tokens_embedded_estimated: int = 0
    tokens_saved: int = 0
    tokens_saved_estimated: int = 0
    tokens_batch: int = 0
    """Of ``tokens_embedded``, those embedded through a provider's batch API (billed at its batch price)."""

    # Spelled out field by field: these run on every call (hit counters are buffered per
    # call), where a loop over dataclasses.fields() cost more than the lookup itself.
    def add(self, other: UsageDelta) -> None:
        self.calls += other.calls
        self.hits += other.hits
        self.misses += other.misses
        self.provider_calls += other.provider_calls
        self.provider_seconds += other.provider_seconds
        self.tokens_embedded += other.tokens_embedded
        self.tokens_embedded_estimated += other.tokens_embedded_estimated
        self.tokens_saved += other.tokens_saved
        self.tokens_saved_estimated += other.tokens_saved_estimated
        self.tokens_batch += other.tokens_batch

    def is_empty(self) -> bool:
        return not any(self.as_tuple())

    def as_tuple(self) -> tuple[float, ...]:
        return (
            self.calls,
            self.hits,
            self.misses,
            self.provider_calls,
            self.provider_seconds,
            self.tokens_embedded,
            self.tokens_embedded_estimated,
            self.tokens_saved,
            self.tokens_saved_estimated,
            self.tokens_batch,
        )

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def estimate_tokens(texts: Sequence[str]) -> np.ndarray:
    """A provider-free token estimate: one token per 4 UTF-8 bytes, at least one per text.

    Used where a provider reports no usage (Gemini, local models, custom functions); the
    resulting counts are always marked as estimated.
    """
    import numpy as np

    return np.fromiter(map(estimate_text_tokens, texts), dtype=np.int64, count=len(texts))


def estimate_total_tokens(texts: Sequence[str]) -> int:
    """The estimate for a request of ``texts``, as rate limits count it before it is sent."""
    return sum(map(estimate_text_tokens, texts))


def estimate_text_tokens(text: str) -> int:
    """The estimate for one text (also what batches are sized by before any request)."""
    return (len(text.encode("utf-8", "surrogatepass")) + 3) // 4 or 1


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Split a provider-reported ``total`` over items in proportion to ``weights``.

    Uses largest remainders so the parts are non-negative integers that sum to exactly
    ``total``: a batch's tokens, spread over its entries, add back up to what the
    provider billed, and so do the savings of later hits.
    """
    import numpy as np

    n = len(weights)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    w = weights.astype(np.float64)
    wsum = w.sum()
    if wsum <= 0:
        w = np.ones(n)
        wsum = float(n)
    exact = w * (total / wsum)
    parts = np.floor(exact).astype(np.int64)
    short = int(total - parts.sum())
    if short > 0:
        order = np.argsort(-(exact - parts), kind="stable")[:short]
        parts[order] += 1
    return parts
