"""The event codec over hostile input: every value decodes to an Event or a BadEvent naming its reason.

Property tests (hypothesis, derandomized so every run checks the same examples) over arbitrary
bytes, arbitrary JSON values and event-shaped objects, plus the named corpus in fixtures/hostile.py.
"""

from __future__ import annotations

import json
import time

import pytest
from fixtures.hostile import CORPUS, deep_json, dumps, events, json_values, nested
from fixtures.kafka import LABEL_SETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gliclass_core.config import parse_config
from gliclass_core.processing.bounded_json import JsonRejected, deeper_than, loads
from gliclass_core.processing.validation import has_content, lone_surrogate_at
from gliclass_core.types import Prediction
from worker.codec import (
    DLQ_RESERVE,
    MAX_ID_CHARS,
    MAX_LABEL_BYTES,
    BadEvent,
    Event,
    Source,
    carry_headers,
    check_record_size,
    dead_letter_headers,
    decode_event,
    encode_result,
    fit_dead_letter,
    header_map,
    record_bytes,
    record_headers,
)
from worker.config import Route, parse_kafka_config
from worker.routes import resolve

REASONS = {
    "missing_text", "too_large", "undecodable", "empty_text", "too_deep", "invalid_number",
    "invalid_json", "invalid_text", "invalid_id", "invalid_labels", "unknown_label_set",
}  # fmt: skip
PROPERTY = settings(
    derandomize=True,
    database=None,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def outcome(value: bytes | None) -> Event | BadEvent:
    """decode_event's result or its BadEvent; any other exception fails the test."""
    try:
        return decode_event(value)
    except BadEvent as bad:
        return bad


def check_event(event: Event) -> None:
    """A decoded event is safe for everything after it: tokenizer, output encoding, headers."""
    assert lone_surrogate_at(event.text) is None and has_content(event.text)
    if event.id is not None:
        assert len(event.id) <= MAX_ID_CHARS and lone_surrogate_at(event.id) is None
    if event.labels is not None:
        assert event.labels and len(set(event.labels)) == len(event.labels)
        assert sum(len(x.encode()) for x in event.labels) <= MAX_LABEL_BYTES
    labels = event.labels or ("a",)
    out = encode_result(
        event, Source("in", 0, 1), Prediction(scores=dict.fromkeys(labels, 0.5), labels=list(labels)),
        "m", None, 1.0,
    )  # fmt: skip
    assert json.loads(out)["id"] == event.id


def check(result: Event | BadEvent) -> None:
    if isinstance(result, Event):
        check_event(result)
    else:
        assert result.reason in REASONS and result.message
        headers = dead_letter_headers([], Source("in", 0, 1), result.reason, result.message)
        assert dict(headers)["error.reason"] == result.reason.encode()


@PROPERTY
@given(st.one_of(st.binary(max_size=2048), st.binary(max_size=64).map(lambda b: b"{" + b)))
def test_arbitrary_bytes_decode_or_name_their_reason(value: bytes) -> None:
    check(outcome(value))


@PROPERTY
@given(json_values)
def test_arbitrary_json_values_decode_or_name_their_reason(value: object) -> None:
    check(outcome(dumps(value)))


@PROPERTY
@given(events)
def test_event_shaped_objects_with_any_field_types(value: dict) -> None:
    result = outcome(dumps(value))
    check(result)
    text = value.get("text")
    if isinstance(result, Event):
        assert result.text == text
    elif not isinstance(text, str):
        assert result.reason in {"missing_text", "invalid_number", "invalid_json"}


@settings(derandomize=True, database=None, max_examples=40, deadline=None)
@given(deep_json)
def test_any_nesting_depth_is_bounded_before_parsing(shape: tuple[int, str]) -> None:
    depth, kind = shape
    started = time.perf_counter()
    result = outcome(b'{"text": "hi", "extra": ' + nested(depth, kind).encode() + b"}")
    if depth >= 32:  # the event object is one level, MAX_DEPTH is 32
        assert isinstance(result, BadEvent) and result.reason == "too_deep"
    else:
        assert isinstance(result, Event)
    assert time.perf_counter() - started < 5  # linear, not a recursion into 200k frames


def corpus_route() -> tuple[dict, Route]:
    app = parse_config(
        {
            "label_sets": LABEL_SETS,
            "kafka": {
                "bootstrap_servers": "x:1",
                "routes": [{"input": "in", "output": "out", "label_set": "support"}],
            },
        }
    )
    return app.label_sets, parse_kafka_config(app).routes[0]


@pytest.mark.parametrize(("name", "value", "reason"), CORPUS, ids=[c[0] for c in CORPUS])
def test_hostile_corpus(name: str, value: bytes | None, reason: str | None) -> None:
    result = outcome(value)
    if isinstance(result, Event):  # the worker resolves its labels next
        label_sets, route = corpus_route()
        try:
            resolve(result, route, label_sets)
        except BadEvent as bad:
            result = bad
    if reason in (None, "invalid_input"):  # decoded; scored, or refused by the model's validation
        assert isinstance(result, Event), f"{name}: {result}"
        check_event(result)
    else:
        assert isinstance(result, BadEvent), f"{name}: decoded as {result}"
        assert result.reason == reason, f"{name}: {result.reason}: {result.message}"


def test_depth_prescan_ignores_brackets_inside_strings() -> None:
    value = json.dumps({"text": "[" * 10_000 + "{" * 10_000, "x": ['"\\[', "]]]"]}).encode()
    assert not deeper_than(value, 3)
    assert decode_event(value).text.startswith("[[[")
    assert deeper_than(b'["\\\\", [[[]]]]', 3)  # an escaped backslash ends the string before [[[
    escaped = b"[" + b",".join([b'"x[\\"[{y"'] * 5000) + b"]"  # brackets after escaped quotes
    assert not deeper_than(escaped, 3) and json.loads(escaped)[0] == 'x["[{y'
    with pytest.raises(JsonRejected) as info:
        loads('"' + '\\"' * 200_000)  # unterminated, full of escaped quotes: still linear
    assert info.value.reason == "invalid_json"


def test_record_size_is_bounded_by_the_producer_limit() -> None:
    limit = 100_000
    check_record_size(b"k", b"x" * (limit - DLQ_RESERVE - 1), [], limit)
    with pytest.raises(BadEvent) as info:
        check_record_size(b"k", b"x" * (limit - DLQ_RESERVE), [], limit)
    assert info.value.reason == "too_large"
    with pytest.raises(BadEvent) as info:
        check_record_size(b"k", b"x", [("h", b"y" * (limit // 2))], limit)
    assert info.value.reason == "too_large" and "headers" in info.value.message
    key, value, headers = fit_dead_letter(b"k", b"x" * limit, [("h", b"v")], limit)
    assert record_bytes(key, value, headers) <= limit - DLQ_RESERVE
    assert dict(headers)["error.value_bytes"] == str(limit).encode() and value == b"x" * len(value)
    key, value, headers = fit_dead_letter(b"k" * limit, b"x" * limit, [("h", b"v" * limit)], limit)
    assert record_bytes(key, value, headers) <= limit - DLQ_RESERVE


def test_dead_letter_headers_survive_unencodable_messages() -> None:
    headers = dict(dead_letter_headers(None, Source("in", 0, 1), "invalid_text", "bad \ud800 " * 500))
    assert len(headers["error.message"]) <= 1000 * 10 and b"\\ud800" in headers["error.message"]


class _Record:
    """A consumed record's `headers()` only: confluent_kafka's Message cannot be built outside a
    consumer, and the client hands headers as pairs, a mapping or None, with bytes, str or None values."""

    def __init__(self, headers: object) -> None:
        self._headers = headers

    def headers(self) -> object:
        return self._headers


# A consumed record carries bytes; the client's type also allows str values (a lone surrogate too).
_HEADER_VALUES = st.one_of(
    st.binary(max_size=64), st.text(max_size=32), st.sampled_from(["\ud800", "a\udfffb"]), st.none()
)


@PROPERTY
@given(
    st.one_of(
        st.none(),
        st.lists(st.tuples(st.text(max_size=16), _HEADER_VALUES), max_size=8),
        st.dictionaries(st.text(max_size=16), _HEADER_VALUES, max_size=8),
    )
)
def test_any_input_headers_are_carried_and_dead_lettered_as_bytes(headers: object) -> None:
    pairs = record_headers(_Record(headers))
    carried = carry_headers(pairs)
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in carried)
    assert len(carried) == (len(headers) if headers else 0)
    dead = dead_letter_headers(pairs, Source("in", 0, 1), "invalid_json", "bad")
    assert header_map(dead)["error.reason"] == "invalid_json"
    assert record_bytes(b"k", b"v", dead) > 0


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(
    key=st.one_of(
        st.none(),
        st.binary(max_size=64),
        st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )
)
def test_any_record_key_gives_a_plain_text_event_a_valid_id_or_none(key: bytes | None) -> None:
    event = decode_event(b"plain text", key=key)
    assert event.text == "plain text"
    if event.id is not None:
        assert key is not None and event.id == key.decode("utf-8")
        assert len(event.id) <= MAX_ID_CHARS and lone_surrogate_at(event.id) is None
