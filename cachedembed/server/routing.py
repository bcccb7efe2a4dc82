"""The models a server answers for: ``--model [alias=]provider:value`` parsed into cached upstreams."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..wrapper import Cached

# Option names under which shipped providers report a configured output size in get_config().
_DIMENSION_OPTIONS = ("dimensions", "output_dimensionality", "output_dimension", "truncate_dim")


def parse_model_option(option: str) -> tuple[str | None, str]:
    """Split ``alias=provider:value`` into ``(alias, spec)``; ``(None, spec)`` without an alias.

    The alias is what clients send as ``model``. An ``=`` after the first ``:`` belongs to the
    spec (``tei:http://host/?a=b``), so only a prefix without ``:`` is taken as the alias.
    """
    head, sep, rest = option.partition("=")
    if sep and ":" not in head and head and rest:
        return head, rest
    if sep and ":" not in head:
        raise ConfigurationError(f"--model {option!r}: write ALIAS=PROVIDER:MODEL")
    return None, option


@dataclass(frozen=True)
class Pacing:
    """How fast each upstream's misses go out (``serve --concurrency``, ``--requests-per-minute``,
    ``--tokens-per-minute``); ``None``: the provider's default, no configured limit."""

    concurrency: int | None = None
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


@dataclass
class Upstream:
    """One configured model: the names clients may call it by and its cached embedding function."""

    id: str
    """The name ``/v1/models`` lists, and the one echoed in responses when a client used it."""
    cached: Cached
    aliases: frozenset[str] = field(default_factory=frozenset)
    """Every name that routes here (``id`` included)."""

    @classmethod
    def from_option(cls, option: str, cache: Any, pacing: Pacing = Pacing()) -> Upstream:
        """Build from a ``--model`` value against the server's one cache (store or URL)."""
        from ..embedding_functions import from_spec
        from ..wrapper import Cached

        alias, spec = parse_model_option(option)
        ef = from_spec(
            spec,
            requests_per_minute=pacing.requests_per_minute,
            tokens_per_minute=pacing.tokens_per_minute,
        )
        return cls.of(Cached(ef, cache, concurrency=pacing.concurrency), spec, alias)

    @classmethod
    def of(cls, cached: Cached, spec: str, alias: str | None = None) -> Upstream:
        """An upstream answering to ``alias`` if given, else to ``spec`` and the model part of it."""
        if alias:
            return cls(alias, cached, frozenset({alias}))
        _, _, value = spec.partition(":")
        names = {spec} | ({value} if value else set())
        return cls(value or spec, cached, frozenset(names))

    def prepare(self) -> None:
        """Build the provider's client or load its model now, as the first miss would.

        This is where a provider finds its API key missing (``ConfigurationError`` naming the
        variable, as ``cachedembed embed`` reports it), so a server can refuse to start.
        """
        prepare = getattr(self.cached.ef, "prepare", None)
        if callable(prepare):
            prepare()

    def configured_dimension(self) -> int | None:
        """The output size the provider was configured with, where its config names one."""
        try:
            config = self.cached.ef.get_config()
        except Exception:
            return None
        for option in _DIMENSION_OPTIONS:
            value = config.get(option)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    def dimension(self) -> int | None:
        """The vector size this upstream serves: configured, or learned from cached vectors."""
        return self.configured_dimension() or self.cached.dimension("document")

    def describe(self) -> dict[str, Any]:
        """Provider and model from the cache identity (never secrets), for ``/v1/models`` and metrics."""
        identity = self.cached.identity("document")
        return {
            "provider": str(identity.get("provider", "")),
            "model": str(identity.get("model", "")),
        }


class Router:
    """Finds the upstream for a request's ``model`` (and ``dimensions``, when several share a name)."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        if not upstreams:
            raise ConfigurationError("serve needs at least one --model")
        self.upstreams = upstreams
        self._by_name: dict[str, list[Upstream]] = {}
        for upstream in upstreams:
            for name in upstream.aliases:
                self._by_name.setdefault(name, []).append(upstream)

    @property
    def default(self) -> Upstream:
        """The first ``--model``: what ``/embed`` (TEI, which names no model) uses."""
        return self.upstreams[0]

    def candidates(self, model: str) -> list[Upstream]:
        return self._by_name.get(model, [])

    def ids(self) -> list[str]:
        return list(dict.fromkeys(u.id for u in self.upstreams))
