"""Big notebook frames are hashed by their bytes: every change to a cell, a label, a name or a
dtype changes the hash; an equal copy hashes alike; small frames keep their hashes."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airun_nb.engine.fingerprint import Fingerprinter
from airun_nb.store import framehash

ROWS = 600_000  # 2 float columns and an object column: over BIG_FRAME_BYTES


def _big() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": np.arange(ROWS, dtype="float64"),
            "b": np.ones(ROWS),
            "when": pd.date_range("2026-01-01", periods=ROWS, freq="s"),
            "c": ["x"] * ROWS,
        }
    )


def _hash(value: object) -> str:
    got = Fingerprinter({}).value_hash(value)
    assert got is not None
    return got[0]


def test_a_big_frame_is_hashed_by_bytes() -> None:
    assert framehash.shallow_bytes(_big()) >= framehash.BIG_FRAME_BYTES
    assert _hash(_big()) == _hash(_big().copy())


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.loc.__setitem__((ROWS - 1, "a"), -1.0),
        lambda f: f.loc.__setitem__((3, "b"), np.nan),
        lambda f: f.loc.__setitem__((7, "c"), "y"),
        lambda f: f.loc.__setitem__((9, "when"), pd.Timestamp("2020-01-01")),
        lambda f: f.rename(columns={"b": "bb"}),
        lambda f: f.set_axis(np.arange(1, ROWS + 1)),
        lambda f: f.__setitem__("a", f["a"].astype("float32")),
        lambda f: f.loc.__setitem__((0, "a"), -0.0),  # equal to 0.0, stored otherwise
    ],
)
def test_any_change_to_a_big_frame_changes_its_hash(change) -> None:  # type: ignore[no-untyped-def]
    frame = _big()
    before = _hash(frame)
    result = change(frame)
    after = _hash(result if isinstance(result, pd.DataFrame) else frame)
    assert after != before


def test_a_big_series_and_index_are_hashed_by_bytes_too() -> None:
    s = pd.Series(np.arange(2 * ROWS, dtype="int64"))
    before = _hash(s)
    s.iloc[-1] = 0
    assert _hash(s) != before
    idx = pd.Index(np.arange(2 * ROWS, dtype="int64"))
    assert _hash(idx) != _hash(pd.Index(np.arange(1, 2 * ROWS + 1, dtype="int64")))


def test_a_small_frame_keeps_its_row_hash() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "c": ["x", "y"]})
    rows = pd.util.hash_pandas_object(frame, index=True).to_numpy()
    meta = repr(("DataFrame", ["a", "c"])) + repr(frame.dtypes)
    assert _hash(frame) == hashlib.sha256(meta.encode() + rows.tobytes()).hexdigest()[:16]


def _strings() -> pd.DataFrame:
    return pd.DataFrame(
        {"a": np.arange(ROWS, dtype="float64"), "s": [f"row-{i}" for i in range(ROWS)]},
        index=pd.Index([f"k{i}" for i in range(ROWS)]),
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.loc.__setitem__(("k5", "s"), "row-6"),  # same length, other characters
        lambda f: f.loc.__setitem__(("k5", "s"), "row-55"),  # a longer value shifts the rest
        lambda f: f.loc.__setitem__(("k7", "s"), None),  # a missing value
        lambda f: f.rename(index={"k9": "k10"}),  # a label of the string index
    ],
)
def test_string_columns_of_a_big_frame_are_hashed_by_their_arrow_buffers(change) -> None:  # type: ignore[no-untyped-def]
    """A big frame with pandas' Arrow-backed strings (column and index) is hashed by its
    buffers, not row by row; an equal copy hashes alike, and any change to a string, a
    missing value or a label changes the hash."""
    frame = _strings()
    assert str(frame["s"].dtype) == "str" and hasattr(frame["s"].array, "_pa_array")
    before = _hash(frame)
    assert _hash(frame.copy()) == before
    result = change(frame)
    after = _hash(result if isinstance(result, pd.DataFrame) else frame)
    assert after != before


_TEXT = st.one_of(st.none(), st.text(max_size=12))


@st.composite
def _frames(draw: st.DrawFn) -> tuple[list[str | None], list[float]]:
    n = draw(st.integers(min_value=1, max_value=40))
    texts = draw(st.lists(_TEXT, min_size=n, max_size=n))
    numbers = draw(st.lists(st.floats(allow_nan=False, width=64), min_size=n, max_size=n))
    return texts, numbers


def _frame(texts: list[str | None], numbers: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"s": pd.array(texts, dtype="str"), "x": numbers})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames(), st.data())
def test_the_byte_hash_of_string_columns_sees_every_change(
    frame_values: tuple[list[str | None], list[float]], data: st.DataObject
) -> None:
    """Property: two frames built from the same values hash alike by their bytes (pandas'
    Arrow-backed ``str`` columns through their Arrow buffers), and replacing any one string
    (or missing value) by another value gives another hash."""
    texts, numbers = frame_values
    meta = repr(("DataFrame", ["s", "x"]))
    frame = _frame(texts, numbers)
    assert hasattr(frame["s"].array, "_pa_array")  # the Arrow path is the one under test
    same = framehash.digest(_frame(list(texts), list(numbers)), meta)
    assert framehash.digest(frame, meta) == same
    i = data.draw(st.integers(min_value=0, max_value=len(texts) - 1), label="row")
    other = data.draw(_TEXT.filter(lambda v: v != texts[i]), label="new value")
    changed = list(texts)
    changed[i] = other
    assert framehash.digest(_frame(changed, numbers), meta) != same
