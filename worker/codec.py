"""Kafka bytes <-> worker data: the only module that decodes event values and encodes results.

Input values are UTF-8. A value whose first non-blank character is `{` is a JSON object
(`{"id", "text", "labels"?, "label_set"?, "return_uncalibrated"?}`); any other value is the text itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gliclass_core.types import Prediction

Headers = list[tuple[str, bytes]]


class BadEvent(Exception):
    """An event that cannot be classified; it goes to the dead-letter topic with `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Event:
    """A decoded input event."""

    text: str
    id: str | None = None
    labels: tuple[str, ...] | None = None
    label_set: str | None = None
    # Ask for the scores before calibration too (`uncalibrated_scores`), for a calibrated model.
    return_uncalibrated: bool = False


@dataclass(frozen=True)
class Source:
    """Where an input record came from."""

    topic: str
    partition: int
    offset: int


def decode_event(value: bytes | None) -> Event:
    """Decode one record value. Raises BadEvent naming what is wrong."""
    if value is None:
        raise BadEvent("missing_text", "record has no value (tombstone)")
    try:
        raw = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadEvent("undecodable", f"value is not valid UTF-8: {exc}") from exc
    if not raw.lstrip().startswith("{"):
        if not raw.strip():
            raise BadEvent("empty_text", "value is empty")
        return Event(text=raw)
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadEvent("invalid_json", f"value starts with '{{' but is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise BadEvent("invalid_json", "JSON value must be an object")
    if "text" not in obj:
        raise BadEvent("missing_text", "JSON event has no 'text' field")
    text = obj["text"]
    if not isinstance(text, str):
        raise BadEvent("missing_text", f"'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise BadEvent("empty_text", "'text' is empty")
    event_id = obj.get("id")
    if event_id is not None and not isinstance(event_id, str | int):
        raise BadEvent("invalid_json", "'id' must be a string or an integer")
    labels = obj.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise BadEvent("invalid_labels", "'labels' must be a non-empty list of non-empty strings")
        if len(set(labels)) != len(labels):
            raise BadEvent("invalid_labels", "'labels' contains duplicates")
        labels = tuple(labels)
    label_set = obj.get("label_set")
    if label_set is not None and (not isinstance(label_set, str) or not label_set):
        raise BadEvent("unknown_label_set", "'label_set' must be a non-empty string")
    raw_scores = obj.get("return_uncalibrated", False)
    if not isinstance(raw_scores, bool):
        raise BadEvent("invalid_json", "'return_uncalibrated' must be true or false")
    return Event(
        text=text,
        id=None if event_id is None else str(event_id),
        labels=labels,
        label_set=label_set,
        return_uncalibrated=raw_scores,
    )


def encode_result(
    event: Event,
    source: Source,
    prediction: Prediction,
    model_id: str,
    label_set: str | None,
    latency_ms: float,
) -> bytes:
    """Encode the scored output event."""
    out = {
        "id": event.id,
        "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
        "model": model_id,
        "label_set": label_set,
        "scores": {k: round(float(v), 6) for k, v in prediction.scores.items()},
        "labels": list(prediction.labels),
        "latency_ms": round(latency_ms, 3),
    }
    if event.return_uncalibrated and prediction.uncalibrated_scores is not None:
        out["uncalibrated_scores"] = {
            k: round(float(v), 6) for k, v in prediction.uncalibrated_scores.items()
        }
    if prediction.truncated:
        out["truncated"] = True
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


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
    return kept + [(k, v.encode("utf-8")) for k, v in extra.items()]


def header_map(headers: Sequence[tuple[str, bytes | None]] | None) -> Mapping[str, str]:
    """Decode headers to a dict of strings (last value wins), for tests and logs."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in (headers or ())}
