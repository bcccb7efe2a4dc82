"""Bad and awkward input: a clear error before any provider call, or exactly the right vectors.

Every rejected input must leave the cache untouched (no entry, no counter, no namespace)
and the provider uncalled. Property-based tests then check that *any* list of strings -
duplicates, empty strings, control characters, astral-plane emoji - comes back in
order with the provider's exact vectors, whether served cold or from the cache.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachedembed import Cached, InvalidInputError
from cachedembed.stores import Store, open_store
from tests.conftest import FakeEF, fake_vector
from tests.reliability._helpers import all_entries, same_bits, stats_total


def untouched(store: Store) -> bool:
    store.flush()
    return store.namespaces() == [] and store.stats_rows() == [] and all_entries(store) == []


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (None, "input is None"),
        ([], "empty list"),
        ((), "empty list"),
        (b"abc", "input is bytes"),
        (bytearray(b"abc"), "input is bytes"),
        (42, "input is int"),
        (["ok", None], r"input\[1\] is NoneType, expected str"),
        (["ok", 3.5], r"input\[1\] is float, expected str"),
        (["ok", b"raw"], r"input\[1\] is bytes, expected str \(decode bytes first\)"),
        (["ok", ["nested"]], r"input\[1\] is list, expected str"),
        (["ok", "lone \ud800 surrogate"], r"input\[1\] is not valid Unicode text.*lone surrogate"),
        (["\udfff"], r"input\[0\] is not valid Unicode text"),
    ],
    ids=[
        "none",
        "empty-list",
        "empty-tuple",
        "bytes",
        "bytearray",
        "int",
        "none-item",
        "float-item",
        "bytes-item",
        "list-item",
        "lone-high-surrogate",
        "lone-low-surrogate",
    ],
)
@pytest.mark.parametrize("call", ["__call__", "embed_query"])
def test_bad_input_is_refused_before_anything_happens(
    cache_url: str, bad: Any, problem: str, call: str
) -> None:
    ef = FakeEF()
    wrapper = Cached(ef, cache_url)
    with pytest.raises(InvalidInputError, match=problem):
        getattr(wrapper, call)(bad)
    assert ef.calls == []
    assert untouched(wrapper.store)


async def test_bad_input_is_refused_in_async_calls_too(sqlite_url: str) -> None:
    ef = FakeEF()
    with pytest.raises(InvalidInputError, match="input is None"):
        await Cached(ef, sqlite_url).acall(None)  # type: ignore[arg-type]
    assert ef.calls == []


@pytest.mark.parametrize(
    "texts",
    [
        [""],
        ["", "", "x", ""],
        ["a\x00b", "a"],  # NUL inside a text is a different text, not a terminator
        ["\u200b", " ", "\t\n"],
        ["𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀 \U0010fffd"],
        "just one string",
    ],
    ids=["empty-string", "empty-duplicates", "nul", "whitespace", "astral", "bare-string"],
)
def test_awkward_but_valid_texts_work(cache_url: str, texts: Any) -> None:
    ef = FakeEF()
    wrapper = Cached(ef, cache_url, store_text=True)
    as_list = [texts] if isinstance(texts, str) else texts
    want = np.array([fake_vector(t, 8, "fake-1") for t in as_list])
    assert same_bits(wrapper.embed(texts), want)
    assert same_bits(wrapper.embed(texts), want)  # and again, from the cache
    assert sorted(ef.texts_embedded) == sorted(set(as_list))
    assert {e.text for e in all_entries(wrapper.store)} == set(as_list)


def test_a_10_mb_text_round_trips(sqlite_url: str) -> None:
    big = "lorem ipsum é😀 " * (10 * 2**20 // 19 + 1)
    assert len(big.encode()) >= 10 * 2**20
    ef = FakeEF()
    wrapper = Cached(ef, sqlite_url, store_text=True)
    want = fake_vector(big, 8, "fake-1")
    assert same_bits(wrapper.embed([big, "small"])[0], want)
    assert same_bits(wrapper.embed([big])[0], want)
    assert len(ef.calls) == 1
    stored = {e.text: e for e in all_entries(open_store(sqlite_url))}
    assert big in stored


FORMS: tuple[Literal["NFC", "NFD", "NFKC", "NFKD"], ...] = ("NFC", "NFD", "NFKC", "NFKD")
SAMPLE = "ﬁancé Å ｶ ①"  # a ligature, a combining accent, an Angstrom sign, a half-width kana, a circled digit


def test_normalisation_forms_are_different_keys_by_default(sqlite_url: str) -> None:
    spellings = [unicodedata.normalize(f, SAMPLE) for f in FORMS]
    assert len(set(spellings)) == 4
    ef = FakeEF()
    got = Cached(ef, sqlite_url).embed(spellings)
    # Byte-for-byte keys: each spelling is its own text, embedded as given.
    assert sorted(ef.texts_embedded) == sorted(spellings)
    assert same_bits(got, np.array([fake_vector(s, 8, "fake-1") for s in spellings]))


@pytest.mark.parametrize("form", FORMS)
def test_opting_into_normalisation_shares_entries(sqlite_url: str, form: Any) -> None:
    spellings = [unicodedata.normalize(f, SAMPLE) for f in FORMS]
    ef = FakeEF()
    got = Cached(ef, sqlite_url, normalize_unicode=form).embed(spellings)
    canonical = {unicodedata.normalize(form, s) for s in spellings}
    # The provider sees normalised text only, each distinct normal form once.
    assert sorted(ef.texts_embedded) == sorted(canonical)
    want = np.array([fake_vector(unicodedata.normalize(form, s), 8, "fake-1") for s in spellings])
    assert same_bits(got, want)
    # A normalising wrapper never shares a namespace with a byte-exact one.
    before = len(ef.calls)
    Cached(ef, sqlite_url).embed([unicodedata.normalize(form, SAMPLE)])
    assert len(ef.calls) == before + 1


texts_lists = st.lists(
    st.one_of(st.text(max_size=30), st.sampled_from(["", "a", "é", "e\u0301", "😀", "a\x00"])),
    min_size=1,
    max_size=25,
)


@pytest.mark.parametrize("backend", ["sqlite", "diskcache"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=texts_lists)
def test_any_list_of_strings_round_trips(tmp_path: Path, backend: str, texts: list[str]) -> None:
    url = (
        f"sqlite:///{tmp_path / 'prop.db'}"
        if backend == "sqlite"
        else f"diskcache://{tmp_path / 'prop-dc'}"
    )
    ef = FakeEF()
    wrapper = Cached(ef, url, store_text=True)  # one store shared by every example
    uncached = np.array(ef(texts))
    before = stats_total(wrapper.store)
    first = wrapper.embed(texts)
    second = wrapper.embed(texts)
    assert first.shape == (len(texts), 8)
    assert same_bits(first, uncached)
    assert same_bits(second, uncached)
    after = stats_total(wrapper.store)
    assert (after.hits + after.misses) - (before.hits + before.misses) == 2 * len(texts)
    # Whatever this call paid for is stored under its exact text.
    stored = {e.text for e in all_entries(wrapper.store)}
    assert set(texts) <= stored
