"""Validate a ClassifyItem before any tokenization; errors name the field and item."""

from __future__ import annotations

import math
from collections.abc import Mapping

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.packing import MARKER_TEXTS
from gliclass_core.types import ClassifyItem, Example

MAX_LABELS = 1000


def _no_markers(value: str, field: str, index: int | None) -> None:
    for marker in MARKER_TEXTS:
        if marker in value:
            raise InvalidInput(f"must not contain the reserved marker {marker}", field=field, index=index)


def validate_item(item: object, index: int | None = None) -> ClassifyItem:
    """Check types and values of one item; return it unchanged when valid."""
    if not isinstance(item, ClassifyItem):
        raise InvalidInput(f"expected a ClassifyItem, got {type(item).__name__}", index=index)
    if not isinstance(item.text, str):
        raise InvalidInput(f"must be a string, got {type(item.text).__name__}", field="text", index=index)
    if not item.text.strip():
        raise InvalidInput("is empty", field="text", index=index)
    _no_markers(item.text, "text", index)
    labels = item.labels
    if isinstance(labels, str) or not isinstance(labels, tuple | list):
        raise InvalidInput("must be a list of strings", field="labels", index=index)
    if not labels:
        raise InvalidInput("no labels given", field="labels", index=index)
    if len(labels) > MAX_LABELS:
        raise InvalidInput(
            f"{len(labels)} labels; at most {MAX_LABELS} per item", field="labels", index=index
        )
    seen: set[str] = set()
    for label in labels:
        if not isinstance(label, str):
            raise InvalidInput(f"label {label!r} is not a string", field="labels", index=index)
        if not label.strip():
            raise InvalidInput("contains an empty label", field="labels", index=index)
        if label in seen:
            raise InvalidInput(f"duplicate label {label!r}", field="labels", index=index)
        _no_markers(label, "labels", index)
        seen.add(label)
    _check_threshold(item.threshold, index)
    if not isinstance(item.multi_label, bool):
        raise InvalidInput("must be true or false", field="multi_label", index=index)
    if item.top_k is not None and (
        isinstance(item.top_k, bool) or not isinstance(item.top_k, int) or item.top_k < 1
    ):
        raise InvalidInput("must be a positive integer", field="top_k", index=index)
    if item.prompt is not None:
        if not isinstance(item.prompt, str):
            raise InvalidInput("must be a string", field="prompt", index=index)
        _no_markers(item.prompt, "prompt", index)
    if not isinstance(item.examples, tuple | list):
        raise InvalidInput("must be a list of examples", field="examples", index=index)
    for example in item.examples:
        if not isinstance(example, Example) or not isinstance(example.text, str):
            raise InvalidInput("each example needs a text and true_labels", field="examples", index=index)
        if isinstance(example.true_labels, str) or not all(isinstance(x, str) for x in example.true_labels):
            raise InvalidInput("true_labels must be a list of strings", field="examples", index=index)
        _no_markers(example.text, "examples", index)
    return item


def _check_threshold(threshold: object, index: int | None) -> None:
    values: list[object]
    if isinstance(threshold, Mapping):
        values = list(threshold.values())
        if not all(isinstance(k, str) for k in threshold):
            raise InvalidInput("per-label thresholds must be keyed by label", field="threshold", index=index)
    else:
        values = [threshold]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v) or not 0.0 <= v <= 1.0:
            raise InvalidInput(f"must be a number in [0, 1], got {v!r}", field="threshold", index=index)
