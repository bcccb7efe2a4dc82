"""``Cached``'s options: their types, their checks, and the settings kept on the wrapper's engine."""

from __future__ import annotations

from typing import Any, Generic, Literal, Protocol, TypeVar, overload

from .errors import ConfigurationError

StorageDtype = Literal["float32", "float16"]
UnicodeForm = Literal["NFC", "NFD", "NFKC", "NFKD"]
OnStoreError = Literal["warn", "raise"]
PendingPolicy = Literal["error", "wait", "embed"]

T = TypeVar("T")


class _Facade(Protocol):
    _engine: Any


class OnEngine(Generic[T]):
    """A setting of the wrapper that lives on its engine (read and changed there)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> OnEngine[T]: ...
    @overload
    def __get__(self, obj: _Facade, objtype: type | None = None) -> T: ...
    def __get__(self, obj: _Facade | None, objtype: type | None = None) -> T | OnEngine[T]:
        return self if obj is None else getattr(obj._engine, self.name)

    def __set__(self, obj: _Facade, value: T) -> None:
        setattr(obj._engine, self.name, value)


def check_options(
    dtype: object,
    normalize_unicode: object,
    batch_size: object,
    on_store_error: object,
    pending_batches: object,
) -> None:
    """Refuse, before anything is opened, options ``Cached`` does not know."""
    if on_store_error not in ("warn", "raise"):
        raise ConfigurationError(
            f"on_store_error must be 'warn' or 'raise', got {on_store_error!r}"
        )
    if pending_batches not in ("error", "wait", "embed"):
        raise ConfigurationError(
            f"pending_batches must be 'error', 'wait' or 'embed', got {pending_batches!r}"
        )
    if dtype not in ("float32", "float16"):
        raise ConfigurationError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    if normalize_unicode not in (None, "NFC", "NFD", "NFKC", "NFKD"):
        raise ConfigurationError(
            f"normalize_unicode must be NFC, NFD, NFKC, NFKD or None, got {normalize_unicode!r}"
        )
    check_batch_size(batch_size)


def check_batch_size(batch_size: object) -> None:
    """Refuse a batch size that is not a positive integer (0 would loop forever, -1 embed nothing)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive integer, got {batch_size!r}")
