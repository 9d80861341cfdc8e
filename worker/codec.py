"""Kafka bytes <-> worker data: the only module that decodes event values and encodes results.

Input values are UTF-8. A value whose first non-blank character is `{` is a JSON object
(`{"id", "text", "labels"?, "label_set"?, "return_uncalibrated"?}`; `labels` may be a nested object
of groups, flattened with "." as the reference does); any other value is the text itself, and its
`id` is the record key when that is a valid id (UTF-8, no control characters, at most
MAX_ID_CHARS), else null.

Decoding is bounded before it starts: the value's size (MAX_VALUE_BYTES), the JSON nesting depth
(a linear pre-scan, see gliclass_core.processing.bounded_json), integer length and finiteness.
Every refusal is a BadEvent whose `reason` names the problem (the DLQ's `error.reason`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.bounded_json import JsonRejected
from gliclass_core.processing.bounded_json import loads as bounded_loads
from gliclass_core.processing.hierarchy import flatten, tree_from_labels
from gliclass_core.processing.validation import (
    MAX_LABELS,
    check_labels,
    control_at,
    has_content,
    lone_surrogate_at,
)
from gliclass_core.runtime.sessions.store import SessionUpdate
from gliclass_core.types import LabelNode, Prediction

Headers = list[tuple[str, bytes]]

MAX_VALUE_BYTES = 1_000_000  # librdkafka's default message.max.bytes
MAX_DEPTH = 32
MAX_ID_CHARS = 1024
# Inline labels come back twice in the output (scores and predicted labels): bounded so the
# output record stays well under the producer's message.max.bytes.
MAX_LABEL_BYTES = 64 * 1024
# Room kept for the headers the dead letter adds (error.*, source.*, trace context, transaction).
DLQ_RESERVE = 16 * 1024


class BadEvent(Exception):
    """An event that cannot be classified; it goes to the dead-letter topic with `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def unforeseen(exc: BaseException) -> BadEvent:
    """The dead letter of a failure nobody foresaw: reason internal_error, the exception type named."""
    return BadEvent("internal_error", f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Event:
    """A decoded input event."""

    text: str
    id: str | None = None
    labels: tuple[str, ...] | None = None
    label_set: str | None = None
    label_tree: tuple[LabelNode, ...] | None = None  # `labels` given as a nested object
    # Ask for the scores before calibration too (`uncalibrated_scores`), for a calibrated model.
    return_uncalibrated: bool = False


@dataclass(frozen=True)
class Source:
    """Where an input record came from."""

    topic: str
    partition: int
    offset: int


def decode_event(value: bytes | None, max_bytes: int = MAX_VALUE_BYTES, key: bytes | None = None) -> Event:
    """Decode one record value (a plain-text value takes `key` as its id). Raises BadEvent naming what
    is wrong."""
    if value is None:
        raise BadEvent("missing_text", "record has no value (tombstone)")
    if len(value) > max_bytes:
        raise BadEvent("too_large", f"value is {len(value)} bytes; at most {max_bytes} are decoded")
    try:
        raw = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadEvent("undecodable", f"value is not valid UTF-8: {exc}") from exc
    if not raw.lstrip().startswith("{"):
        if not has_content(raw):
            raise BadEvent("empty_text", "value is empty (only whitespace, control or zero-width characters)")
        return Event(text=raw, id=_key_id(key))
    try:
        obj = bounded_loads(raw, MAX_DEPTH, value)
    except JsonRejected as exc:
        raise BadEvent(exc.reason, f"value starts with '{{': {exc.message}") from exc
    if not isinstance(obj, dict):
        raise BadEvent("invalid_json", "JSON value must be an object")
    text = _text(obj)  # the text is judged first: a bad text is the reason even when labels are bad too
    event_id = _event_id(obj.get("id"))
    labels = obj.get("labels")
    label_tree = None
    if isinstance(labels, dict):
        try:
            label_tree = tree_from_labels(labels)
        except InvalidInput as exc:
            raise BadEvent("invalid_labels", f"'labels': {exc.bare_message}") from exc
        labels = list(flatten(label_tree))
    raw_scores = obj.get("return_uncalibrated", False)
    if not isinstance(raw_scores, bool):
        raise BadEvent(
            "invalid_json", f"'return_uncalibrated' must be true or false, got {_kind(raw_scores)}"
        )
    return Event(
        text=text,
        id=event_id,
        labels=_labels(labels),
        label_set=_label_set(obj.get("label_set")),
        label_tree=label_tree,
        return_uncalibrated=raw_scores,
    )


def _text(obj: dict[str, Any]) -> str:
    if "text" not in obj:
        raise BadEvent("missing_text", "JSON event has no 'text' field")
    text = obj["text"]
    if not isinstance(text, str):
        raise BadEvent("missing_text", f"'text' must be a string, got {_kind(text)}")
    at = lone_surrogate_at(text)
    if at is not None:
        raise BadEvent("invalid_text", f"'text' holds a lone surrogate at character {at} (not valid Unicode)")
    if not has_content(text):
        raise BadEvent("empty_text", "'text' is empty (only whitespace, control or zero-width characters)")
    return text


def _event_id(event_id: object) -> str | None:
    if event_id is None:
        return None
    if isinstance(event_id, bool) or not isinstance(event_id, str | int):
        raise BadEvent("invalid_id", f"'id' must be a string or an integer, got {_kind(event_id)}")
    if isinstance(event_id, int):
        if not -(2**63) <= event_id < 2**64:
            raise BadEvent("invalid_id", "an integer 'id' must fit in 64 bits")
        return str(event_id)
    if len(event_id) > MAX_ID_CHARS:
        raise BadEvent("invalid_id", f"'id' has {len(event_id)} characters; at most {MAX_ID_CHARS}")
    if lone_surrogate_at(event_id) is not None:
        raise BadEvent("invalid_id", "'id' holds a lone surrogate (not valid Unicode)")
    if control_at(event_id) is not None:
        raise BadEvent("invalid_id", "'id' holds a control character")
    return event_id


def _key_id(key: bytes | None) -> str | None:
    """A record key as a plain-text event's id; None when it is not a valid id (the text is still fine)."""
    if key is None:
        return None
    try:
        return _event_id(key.decode("utf-8")) if len(key) <= 4 * MAX_ID_CHARS else None
    except (UnicodeDecodeError, BadEvent):
        return None


def _labels(labels: object) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if not isinstance(labels, list) or not labels:
        raise BadEvent("invalid_labels", "'labels' must be a non-empty list of strings")
    # Checked here, not left to validate_item, for the specific reason (invalid_labels, not invalid_input).
    if len(labels) > MAX_LABELS:
        raise BadEvent("invalid_labels", f"'labels' has {len(labels)} entries; at most {MAX_LABELS}")
    try:
        check_labels(labels)  # validate_item's label checks: strings with content, distinct, no controls
    except InvalidInput as exc:
        raise BadEvent("invalid_labels", exc.bare_message) from None
    size = sum(len(label.encode("utf-8")) for label in labels)
    if size > MAX_LABEL_BYTES:
        raise BadEvent("invalid_labels", f"'labels' total {size} bytes of UTF-8; at most {MAX_LABEL_BYTES}")
    return tuple(labels)


def _label_set(label_set: object) -> str | None:
    if label_set is None:
        return None
    if not isinstance(label_set, str) or not label_set:
        raise BadEvent("unknown_label_set", f"'label_set' must be a non-empty string, got {_kind(label_set)}")
    if len(label_set) > MAX_ID_CHARS or lone_surrogate_at(label_set) is not None:
        raise BadEvent("unknown_label_set", "'label_set' is not a configured label-set name")
    return label_set


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def record_bytes(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> int:
    """The size librdkafka checks against message.max.bytes: key, value and headers."""
    header_size = sum(len(k.encode("utf-8", "replace")) + len(v) for k, v in headers)
    return len(key or b"") + len(value or b"") + header_size


def check_record_size(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]], limit: int
) -> None:
    """Raise BadEvent("too_large") for a record whose output or dead letter could not be produced.

    The dead letter repeats key, value and headers plus DLQ_RESERVE bytes of its own headers; the
    output repeats key and headers next to the result, so those may use at most half of `limit`.
    """
    size = record_bytes(key, value, headers)
    if size + DLQ_RESERVE > limit:
        raise BadEvent(
            "too_large",
            f"record is {size} bytes; the worker takes at most {limit - DLQ_RESERVE} "
            f"(the producer's message.max.bytes {limit} less room for the dead-letter headers)",
        )
    kept = size - len(value or b"")
    if kept > limit // 2:
        raise BadEvent("too_large", f"key and headers are {kept} bytes; at most {limit // 2}")


def fit_dead_letter(
    key: bytes | None, value: bytes | None, headers: Headers, limit: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """Shrink a too-large record so its dead letter can be produced: value cut first, then headers dropped.

    A cut value gets an `error.value_bytes` header with the original length.
    """
    budget = limit - DLQ_RESERVE
    if record_bytes(key, value, headers) <= budget:
        return key, value, headers
    if record_bytes(key, None, headers) > budget // 2:
        headers = []
    if len(key or b"") > budget // 2:
        key = (key or b"")[: budget // 2]
    if value is not None:
        original = len(value)
        room = max(0, budget - record_bytes(key, None, headers) - 64)
        if original > room:
            value = value[:room]
            headers = [*headers, ("error.value_bytes", str(original).encode())]
    return key, value, headers


def session_fields(key: str, update: SessionUpdate, rebuilt: bool) -> dict[str, Any]:
    """The output's `session` object: the conversation (record key) and what the append did."""
    return {
        "id": key,
        "triggered": update.triggered,
        "cached_tokens": update.cached_tokens,
        "new_session": update.new_session,
        "rebuilt": rebuilt,
    }


def encode_result(
    event: Event,
    source: Source,
    prediction: Prediction | None,
    model_id: str,
    label_set: str | None,
    latency_ms: float,
    session: Mapping[str, Any] | None = None,
) -> bytes:
    """Encode the output event (a session record whose strategy did not fire has null scores and labels)."""
    out: dict[str, Any] = {
        "id": event.id,
        "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
        "model": model_id,
        "label_set": label_set,
        "scores": None,
        "labels": None,
        "latency_ms": round(latency_ms, 3),
    }
    if session is not None:
        out["session"] = dict(session)
    if prediction is None:
        return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    out["scores"] = {k: round(float(v), 6) for k, v in prediction.scores.items()}
    out["labels"] = list(prediction.labels)
    if event.return_uncalibrated and prediction.uncalibrated_scores is not None:
        out["uncalibrated_scores"] = {
            k: round(float(v), 6) for k, v in prediction.uncalibrated_scores.items()
        }
    if prediction.truncated:
        out["truncated"] = True
    if prediction.text_chunks > 1:
        out["text_chunks"] = prediction.text_chunks
    if prediction.hierarchy is not None:
        out["hierarchy"] = _rounded(prediction.hierarchy)
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _rounded(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _rounded(v) if isinstance(v, Mapping) else round(float(v), 6) for k, v in tree.items()}


def record_headers(msg: Any) -> list[tuple[str, bytes | None]]:
    """A consumed record's headers as (name, bytes or None) pairs, whatever shape the client gives."""
    raw = msg.headers()
    pairs = raw.items() if isinstance(raw, Mapping) else (raw or ())
    return [(k, v.encode("utf-8", "backslashreplace") if isinstance(v, str) else v) for k, v in pairs]


def carry_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> Headers:
    """Copy input headers for an output record (None values become empty bytes)."""
    return [(k, v if v is not None else b"") for k, v in (headers or ())]


def dead_letter_headers(
    headers: Sequence[tuple[str, bytes | None]] | None, source: Source, reason: str, message: str
) -> Headers:
    """Return the input headers plus error.reason, error.message and source.* headers."""
    extra = {
        "error.reason": reason,
        "error.message": message[:1000],
        "source.topic": source.topic,
        "source.partition": str(source.partition),
        "source.offset": str(source.offset),
    }
    kept = [(k, v) for k, v in carry_headers(headers) if k not in extra]
    return kept + [(k, v.encode("utf-8", "backslashreplace")) for k, v in extra.items()]


def header_map(headers: Sequence[tuple[str, bytes | None]] | None) -> Mapping[str, str]:
    """Decode headers to a dict of strings (last value wins), for tests and logs."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in (headers or ())}
