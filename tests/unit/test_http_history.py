"""The console's history ring and its query parameters: bounded, and hostile input is a typed error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gliclass_core.errors import InvalidInput
from server.http.history import History, bounded
from server.http.live import MAX_HISTORY_S, history_query


def test_the_ring_keeps_its_capacity_and_answers_by_window_or_since() -> None:
    ring = History(resolution_s=5.0, capacity=4)
    for t in range(10):
        ring.add({"t": float(t * 5)})
    assert [r["t"] for r in ring.rows()] == [30.0, 35.0, 40.0, 45.0]
    assert [r["t"] for r in ring.rows(window_s=10)] == [40.0, 45.0]
    assert [r["t"] for r in ring.rows(since=35.0)] == [40.0, 45.0]
    assert ring.rows(since=45.0) == []


def test_bounded_keeps_the_largest_and_folds_the_rest_into_other() -> None:
    counts = {f"reason-{i}": float(i) for i in range(12)}
    out = bounded(counts, limit=3)
    assert set(out) == {"reason-11", "reason-10", "reason-9", "other"}
    assert out["other"] == sum(range(9))
    assert bounded({"a": 1.0}) == {"a": 1.0}


Window = tuple[float | None, float | None]
CASES = [
    ({}, (None, None)),
    ({"history": "300"}, (300.0, None)),
    ({"since": "1.5e9", "history": ""}, (None, 1.5e9)),
]


@pytest.mark.parametrize(("query", "expected"), CASES)
def test_history_query_reads_seconds(query: dict[str, str], expected: Window) -> None:
    assert history_query(query) == expected


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["history", "since", "other"]), st.text(max_size=30), max_size=3))
def test_any_query_is_seconds_in_range_or_an_error_naming_the_parameter(query: dict[str, str]) -> None:
    try:
        window, since = history_query(query)
    except InvalidInput as exc:
        assert exc.field in ("history", "since")
        return
    assert window is None or 0 <= window <= MAX_HISTORY_S
    assert since is None or since >= 0
