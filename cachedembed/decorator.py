"""``@cached``: a persistent cache for a plain ``list[str] -> vectors`` function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError
from .stores import Store
from .wrapper import Cached

__all__ = ["cached"]


class _PlainFunction:
    """A bare ``list[str] -> vectors`` function given a model name (for ``@cached``)."""

    def __init__(self, fn: Callable[[list[str]], Any], model: str) -> None:
        self.fn = fn
        self.model = model

    def __call__(self, input: list[str]) -> Any:
        return self.fn(input)

    def name(self) -> str:
        return f"function:{getattr(self.fn, '__qualname__', 'fn')}"

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model}


def cached(
    model: str, cache: Store | str | None = None, **options: Any
) -> Callable[[Callable[[list[str]], Any]], Cached]:
    """Decorate a plain ``list[str] -> vectors`` function with a persistent cache.

    ``model`` names the model (and any options that change its output); it is the
    namespace, so two functions with the same ``model`` share entries::

        @cached(model="my-model-v2")
        def embed(texts: list[str]) -> list[list[float]]: ...

        embed(["a", "b"])          # list of float32 numpy vectors
    """
    if not model:
        raise ConfigurationError("@cached needs model='...': it names the cache namespace")

    def decorate(fn: Callable[[list[str]], Any]) -> Cached:
        return Cached(_PlainFunction(fn, model), cache, namespace=f"model:{model}", **options)

    return decorate
