"""Event decoding, label resolution and output encoding, without a broker."""

from __future__ import annotations

import json

import pytest

from gliclass_core.config import parse_config
from gliclass_core.types import Prediction
from worker.codec import (
    BadEvent,
    Event,
    Source,
    dead_letter_headers,
    decode_event,
    encode_result,
    header_map,
)
from worker.config import parse_kafka_config
from worker.routes import resolve

SETS = {
    "support": {"labels": ["billing", "bug"], "threshold": 0.3, "multi_label": False},
    "topics": {"labels": ["sport", "politics", "tech"]},
}


def route_config(**route):
    app = parse_config(
        {
            "label_sets": SETS,
            "kafka": {"bootstrap_servers": "x:1", "routes": [{"input": "in", "output": "out", **route}]},
        }
    )
    return app, parse_kafka_config(app).routes[0]


def test_plain_text_value_is_the_text():
    assert decode_event("  hello  wörld ".encode()) == Event(text="  hello  wörld ")


def test_json_event_fields():
    ev = decode_event(json.dumps({"id": 7, "text": "t", "labels": ["a", "b"], "extra": 1}).encode())
    assert ev == Event(text="t", id="7", labels=("a", "b"))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe\x00", "undecodable"),
        (b'{"text": "unterminated', "invalid_json"),
        (b'{"id": "1"}', "missing_text"),
        (b'{"text": 5}', "missing_text"),
        (b'{"text": "   "}', "empty_text"),
        (b"", "empty_text"),
        (None, "missing_text"),
        (b'{"text": "x", "labels": []}', "invalid_labels"),
        (b'{"text": "x", "labels": ["a", "a"]}', "invalid_labels"),
        (b'{"text": "x", "label_set": 3}', "unknown_label_set"),
    ],
)
def test_bad_values_name_their_reason(value, reason):
    with pytest.raises(BadEvent) as info:
        decode_event(value)
    assert info.value.reason == reason
    assert info.value.message


@pytest.mark.parametrize(
    ("labels", "named"),
    [(["a", 5], "5"), (["a", ""], "''"), (["a", None], "None"), (["a", "\x00b"], "\\x00")],
)
def test_a_bad_label_is_named_in_the_dead_letter_message(labels, named):
    with pytest.raises(BadEvent) as info:
        decode_event(json.dumps({"text": "x", "labels": labels}).encode())
    assert info.value.reason == "invalid_labels" and named in info.value.message


def test_route_label_set_and_its_settings():
    app, route = route_config(label_set="support")
    resolved = resolve(Event(text="card charged twice"), route, app.label_sets)
    assert resolved.label_set == "support"
    assert resolved.item.labels == ("billing", "bug")
    assert resolved.item.threshold == 0.3 and resolved.item.multi_label is False


def test_event_labels_and_label_set_override_the_route():
    app, route = route_config(label_set="support", threshold=0.9)
    inline = resolve(Event(text="t", labels=("x", "y")), route, app.label_sets)
    assert inline.item.labels == ("x", "y") and inline.label_set is None
    assert inline.item.threshold == 0.9  # the route's override still applies
    named = resolve(Event(text="t", label_set="topics"), route, app.label_sets)
    assert named.item.labels == ("sport", "politics", "tech") and named.label_set == "topics"


def test_unknown_label_set_and_missing_labels_are_bad_events():
    app, route = route_config(label_set="support")
    with pytest.raises(BadEvent) as info:
        resolve(Event(text="t", label_set="nope"), route, app.label_sets)
    assert info.value.reason == "unknown_label_set" and "nope" in info.value.message
    app, bare = route_config()
    with pytest.raises(BadEvent) as info:
        resolve(Event(text="t"), bare, app.label_sets)
    assert info.value.reason == "missing_labels"


def test_over_long_text_rejected_or_truncated_per_route():
    app, reject = route_config(label_set="support", max_text_chars=5, over_length="reject")
    with pytest.raises(BadEvent) as info:
        resolve(Event(text="abcdefgh"), reject, app.label_sets)
    assert info.value.reason == "text_too_long"
    app, cut = route_config(label_set="support", max_text_chars=5)
    assert resolve(Event(text="abcdefgh"), cut, app.label_sets).item.text == "abcde"


def test_uncalibrated_scores_key_on_request():
    pred = Prediction(scores={"a": 0.7}, labels=["a"], uncalibrated_scores={"a": 0.99})
    event = decode_event(b'{"text": "t", "return_uncalibrated": true}')
    assert event.return_uncalibrated
    out = json.loads(encode_result(event, Source("in", 0, 1), pred, "m", None, 1.0))
    assert (out["scores"], out["uncalibrated_scores"]) == ({"a": 0.7}, {"a": 0.99})
    plain = json.loads(encode_result(Event(text="t"), Source("in", 0, 1), pred, "m", None, 1.0))
    assert "uncalibrated_scores" not in plain
    with pytest.raises(BadEvent, match="return_uncalibrated"):
        decode_event(b'{"text": "t", "return_uncalibrated": "yes"}')


def test_encode_session_result_scored_and_not_fired():
    from gliclass_core.runtime.sessions import SessionUpdate
    from worker.codec import session_fields

    pred = Prediction(scores={"billing": 0.91}, labels=["billing"])
    fired = SessionUpdate("kafka:in:0:1:k", True, pred, 12, 5, False)
    out = json.loads(
        encode_result(Event("t"), Source("in", 0, 3), pred, "m", None, 1.0, session_fields("k", fired, True))
    )
    assert out["scores"] == {"billing": 0.91} and out["labels"] == ["billing"]
    assert out["session"] == {
        "id": "k",
        "triggered": True,
        "cached_tokens": 12,
        "new_session": False,
        "rebuilt": True,
    }
    idle = SessionUpdate("kafka:in:0:1:k", False, None, 15, 3, False)
    out = json.loads(
        encode_result(Event("t"), Source("in", 0, 4), None, "m", None, 1.0, session_fields("k", idle, False))
    )
    assert out["scores"] is None and out["labels"] is None and out["session"]["triggered"] is False


def test_encode_result_and_dead_letter_headers():
    pred = Prediction(scores={"billing": 0.91, "bug": 0.2}, labels=["billing"])
    out = json.loads(
        encode_result(Event(text="t", id="t-1"), Source("in", 2, 40), pred, "m", "support", 12.5)
    )
    assert out == {
        "id": "t-1",
        "source": {"topic": "in", "partition": 2, "offset": 40},
        "model": "m",
        "label_set": "support",
        "scores": {"billing": 0.91, "bug": 0.2},
        "labels": ["billing"],
        "latency_ms": 12.5,
    }
    headers = dead_letter_headers(
        [("trace", b"abc"), ("error.reason", b"spoof")], Source("in", 1, 9), "r", "m"
    )
    assert header_map(headers) == {
        "trace": "abc",
        "error.reason": "r",
        "error.message": "m",
        "source.topic": "in",
        "source.partition": "1",
        "source.offset": "9",
    }


def test_a_plain_text_event_takes_the_record_key_as_its_id():
    assert decode_event(b"card charged twice", key=b"ticket-42") == Event(
        "card charged twice", id="ticket-42"
    )
    assert decode_event(b"card charged twice").id is None  # no key: no id
    # A key that is not a valid id leaves the id null; the text is still scored.
    for key in (b"\xff\xfe", b"a\x00b", b"k" * 5000):
        assert decode_event(b"card charged twice", key=key) == Event("card charged twice")
    # A JSON event's id is its own, never the key.
    assert decode_event(b'{"text": "t"}', key=b"k").id is None
    assert decode_event(b'{"text": "t", "id": "j"}', key=b"k").id == "j"
