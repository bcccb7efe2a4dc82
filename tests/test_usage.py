"""Usage counters: adding deltas and their column order."""

from __future__ import annotations

from dataclasses import fields

from cachedembed.usage import UsageDelta


def test_add_and_as_tuple_cover_every_counter_in_column_order() -> None:
    names = UsageDelta.columns()
    a = UsageDelta(*range(1, len(names) + 1))
    b = UsageDelta(*(10 * v for v in range(1, len(names) + 1)))
    a.add(b)
    assert a.as_tuple() == tuple(11 * v for v in range(1, len(names) + 1))
    assert names == tuple(f.name for f in fields(UsageDelta))
    assert a.as_tuple() == tuple(getattr(a, n) for n in names)


def test_a_delta_is_empty_only_when_every_counter_is_zero() -> None:
    assert UsageDelta().is_empty()
    for name in UsageDelta.columns():
        assert not UsageDelta(**{name: 1}).is_empty()
