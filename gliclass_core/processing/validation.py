"""Validate a ClassifyItem before any tokenization; errors name the field and item."""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import cast

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.packing import MARKER_TEXTS
from gliclass_core.types import ClassifyItem, Example

MAX_LABELS = 1000
#: Label lists up to this many characters in all have their checks cached (see check_labels).
CACHED_LABEL_CHARS = 4096
#: Characters of a refused value quoted in its error message.
SHOWN_CHARS = 60
# Characters that carry no content for a tokenizer: whitespace, controls (NUL...), format characters
# (zero-width space, joiners, soft hyphen, BOM...), private-use and unassigned code points (BERT's
# normaliser drops every "other" category), combining marks with no base, the replacement
# character. A text made only of these is empty for every model.
_NO_CONTENT_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me"})
_REPLACEMENT = "\ufffd"
# Runs of common content-less characters, skipped at C speed (each is in one of the categories
# above; tests check that against unicodedata): a megabyte of NUL or zero-width costs milliseconds.
_SURELY_EMPTY_RUN = re.compile(
    "[\\s\x00-\x1f\x7f-\x9f\u00ad\u0300-\u036f\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufe00-\ufe0f\ufeff\ufff0-\ufffb\ufffd\ue000-\uf8ff\ud800-\udfff]*"
)
# Category Cc is exactly U+0000-U+001F and U+007F-U+009F; tab, newline and CR are allowed.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def lone_surrogate_at(value: str) -> int | None:
    """Index of the first lone surrogate (a string that is not valid Unicode), else None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def has_content(value: str) -> bool:
    """True when `value` holds at least one character a tokenizer keeps (see _NO_CONTENT_CATEGORIES)."""
    pos, end = 0, len(value)
    while True:
        pos = _SURELY_EMPTY_RUN.match(value, pos).end()  # type: ignore[union-attr]  # `*` always matches
        if pos >= end:
            return False
        char = value[pos]
        if char != _REPLACEMENT and unicodedata.category(char) not in _NO_CONTENT_CATEGORIES:
            return True
        pos += 1


def control_at(value: str) -> int | None:
    """Index of the first control character (category Cc) other than tab / newline / CR, else None."""
    found = _CONTROL.search(value)
    return found.start() if found else None


def _check_string(value: str, field: str, index: int | None, what: str) -> None:
    at = lone_surrogate_at(value)
    if at is not None:
        raise InvalidInput(
            f"{what} holds a lone surrogate {value[at]!r} at character {at} (not valid Unicode)",
            field=field,
            index=index,
        )
    _no_markers(value, field, index)


def _shown(value: object) -> str:
    """`repr(value)`, cut short: an error message must not echo a huge input (gRPC refuses status
    details over 16 KiB; a dead letter's headers must fit the record)."""
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"
    shown = repr(value)
    return shown if len(shown) <= 2 * SHOWN_CHARS else f"{shown[: 2 * SHOWN_CHARS]}..."


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
    _check_string(item.text, "text", index, "the text")
    if not has_content(item.text):
        raise InvalidInput(
            "is empty (nothing but whitespace, control or zero-width characters)", field="text", index=index
        )
    labels = item.labels
    if isinstance(labels, str) or not isinstance(labels, tuple | list):
        raise InvalidInput("must be a list of strings", field="labels", index=index)
    if not labels:
        raise InvalidInput("no labels given", field="labels", index=index)
    if len(labels) > MAX_LABELS:
        raise InvalidInput(
            f"{len(labels)} labels; at most {MAX_LABELS} per item", field="labels", index=index
        )
    check_labels(labels, index)
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
        _check_string(item.prompt, "prompt", index, "the prompt")
    if not isinstance(item.examples, tuple | list):
        raise InvalidInput("must be a list of examples", field="examples", index=index)
    for example in item.examples:
        if not isinstance(example, Example) or not isinstance(example.text, str):
            raise InvalidInput("each example needs a text and true_labels", field="examples", index=index)
        true_labels = example.true_labels
        if isinstance(true_labels, str) or not isinstance(true_labels, tuple | list):
            raise InvalidInput("true_labels must be a list of strings", field="examples", index=index)
        if not all(isinstance(x, str) for x in true_labels):
            raise InvalidInput("true_labels must be a list of strings", field="examples", index=index)
        _check_string(example.text, "examples", index, "an example's text")
        for label in true_labels:
            _check_string(label, "examples", index, "an example's label")
    return item


def check_labels(labels: tuple[object, ...] | list[object], index: int | None = None) -> None:
    """InvalidInput (field labels) for a non-string, empty, duplicate, invisible-only or control-holding
    label, a lone surrogate or a reserved marker. The list's length is the caller's to check."""
    for label in labels:
        if not isinstance(label, str):
            raise InvalidInput(f"label {_shown(label)} is not a string", field="labels", index=index)
    strings = tuple(cast(list[str], labels))
    # Only small label lists are cached, so hostile calls with distinct huge labels cannot pin memory
    # (at most 1024 lists of CACHED_LABEL_CHARS characters are kept).
    check = _valid_labels_cached if sum(map(len, strings)) <= CACHED_LABEL_CHARS else _valid_labels
    try:
        check(strings)
    except InvalidInput as exc:
        raise InvalidInput(exc.bare_message, field="labels", index=index) from None


def _valid_labels(labels: tuple[str, ...]) -> None:
    """Check a list of string labels (cached when small: a route's labels repeat on every item)."""
    seen: set[str] = set()
    for label in labels:
        if not has_content(label):
            raise InvalidInput(f"contains an empty label {_shown(label)}")
        if label in seen:
            raise InvalidInput(f"duplicate label {_shown(label)}")
        seen.add(label)
    # Whole-list checks in one pass over the joined labels; the offending label is looked up after.
    joined = "\n".join(labels)
    if lone_surrogate_at(joined) is not None or any(marker in joined for marker in MARKER_TEXTS):
        for label in labels:
            _check_string(label, "labels", None, "a label")
    if control_at(joined) is not None:
        label = next(x for x in labels if control_at(x) is not None)
        at = control_at(label) or 0
        raise InvalidInput(f"label {_shown(label)} holds the control character {label[at]!r}")


_valid_labels_cached = functools.lru_cache(maxsize=1024)(_valid_labels)


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
            raise InvalidInput(f"must be a number in [0, 1], got {_shown(v)}", field="threshold", index=index)
