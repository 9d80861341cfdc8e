"""The one request resolver: a decoded request becomes `ClassifyItem`s here, for every edge.

gRPC and HTTP decode their wire format (the proto, or its JSON mapping) into `ItemRequest`s and
the Kafka worker decodes an event plus its route into one; `resolve_items` / `resolve_item` then
apply one precedence (inline `labels`, a `label_tree`, or a named `label_set`: exactly one; item
settings over the label set's over the defaults) and one set of limits (`RequestLimits`), and
raise `InvalidInput` naming the field and the item's index. Nothing here knows a transport.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gliclass_core.config import LabelSet
from gliclass_core.errors import InvalidInput
from gliclass_core.label_sets import item_settings
from gliclass_core.processing.hierarchy import DEFAULT_SEPARATOR, flatten, tree_from_nodes, with_separator
from gliclass_core.processing.long_text import long_text_options
from gliclass_core.processing.validation import check_labels
from gliclass_core.types import TRUNCATE, ClassifyItem, LabelNode, LongText


@dataclass(frozen=True)
class RequestLimits:
    """What one call may ask for (the `[grpc]` limits; HTTP and gRPC share them)."""

    max_items_per_request: int = 256
    max_text_chars: int = 20_000
    max_labels_per_item: int = 256


@dataclass(frozen=True)
class ItemRequest:
    """One item as a client asked for it, decoded from any wire format; None means "not given".

    `label_tree` is (name, children) pairs as the wire carries them (built and bounded here);
    `label_nodes` a tree a decoder built already (Kafka's nested `labels` object), scored against
    `labels`. `long_text` is a mode name or complete options (a Kafka route's).
    """

    text: str
    labels: tuple[str, ...] = ()
    label_set: str | None = None
    label_tree: Sequence[tuple[str, Sequence[Any]]] | None = None
    label_separator: str | None = None
    label_nodes: tuple[LabelNode, ...] | None = None
    threshold: float | None = None
    label_thresholds: Mapping[str, float] = field(default_factory=dict)
    multi_label: bool | None = None
    top_k: int | None = None
    prompt: str | None = None
    long_text: str | LongText | None = None
    text_chunk_size: int | None = None
    text_chunk_overlap: int | None = None
    labels_chunk_size: int | None = None
    return_hierarchical: bool | None = None


def check_count(n: int, limits: RequestLimits) -> None:
    """Refuse a call of no items or of more than the limit (before anything is decoded further)."""
    if n == 0:
        raise InvalidInput("at least one item is required", field="items")
    if n > limits.max_items_per_request:
        raise InvalidInput(
            f"{n} items in one message, the limit is {limits.max_items_per_request}", field="items"
        )


def resolve_items(
    requests: Sequence[ItemRequest],
    label_sets: Mapping[str, LabelSet],
    limits: RequestLimits,
    first_index: int = 0,
) -> list[ClassifyItem]:
    """Resolve a call's items; InvalidInput names the field and the item's index."""
    check_count(len(requests), limits)
    return [resolve_item(r, label_sets, limits, first_index + i) for i, r in enumerate(requests)]


def resolve_item(
    request: ItemRequest,
    label_sets: Mapping[str, LabelSet],
    limits: RequestLimits,
    index: int | None = None,
    *,
    defaults: LabelSet | None = None,
) -> ClassifyItem:
    """Resolve one item: its labels, its label set's defaults under its own settings, its limits.

    Settings come from the item, else the label set it names, else `defaults` (a Kafka route's
    label set, for events that bring their own labels), else the built-in defaults.
    """
    text = request.text
    if not text:
        raise InvalidInput("must be a non-empty string", field="text", index=index)
    if len(text) > limits.max_text_chars:
        raise InvalidInput(
            f"{len(text)} characters, the limit is {limits.max_text_chars}", field="text", index=index
        )
    label_set: LabelSet | None = None
    tree = request.label_nodes
    if request.labels and request.label_set:
        raise InvalidInput("give either 'labels' or 'label_set', not both", field="label_set", index=index)
    if request.label_tree and (request.labels or request.label_set):
        raise InvalidInput(
            "give only one of 'labels', 'label_set' and 'label_tree'", field="label_tree", index=index
        )
    separator = request.label_separator if request.label_separator is not None else DEFAULT_SEPARATOR
    if request.label_tree:
        tree = tree_from_nodes(request.label_tree, separator, field="label_tree", index=index)
        labels = flatten(tree)
    elif request.label_set:
        label_set = label_sets.get(request.label_set)
        if label_set is None:
            known = ", ".join(sorted(label_sets)) or "none configured"
            raise InvalidInput(
                f"unknown label set {request.label_set!r} (known: {known})", field="label_set", index=index
            )
        labels = tuple(label_set.labels)
    elif request.labels:
        labels = tuple(request.labels)
        if tree is not None and separator != DEFAULT_SEPARATOR:
            tree = with_separator(tree, separator)
            labels = flatten(tree)
    else:
        raise InvalidInput("give 'labels' or 'label_set'", field="labels", index=index)
    if len(labels) > limits.max_labels_per_item:
        raise InvalidInput(
            f"{len(labels)} labels, the limit is {limits.max_labels_per_item}", field="labels", index=index
        )
    check_labels(labels, index)
    threshold = None if request.threshold is None else check_threshold(request.threshold, "threshold", index)
    unknown = sorted(set(request.label_thresholds) - set(labels))
    if unknown:
        raise InvalidInput(f"not among the item's labels: {unknown}", field="label_thresholds", index=index)
    per_label = {
        k: check_threshold(v, "label_thresholds", index) for k, v in request.label_thresholds.items()
    }
    if request.top_k is not None and request.top_k < 1:
        raise InvalidInput("must be >= 1 when given", field="top_k", index=index)
    settings = item_settings(
        label_set if label_set is not None else defaults,
        threshold=threshold,
        multi_label=request.multi_label,
        top_k=request.top_k,
        prompt=request.prompt,
        long_text=_long_text(request, label_set if label_set is not None else defaults, index),
        return_hierarchical=request.return_hierarchical,
    )
    if label_set is not None and label_set.label_tree is not None:
        tree = label_set.label_tree
    resolved = settings.item(text, labels, tree)
    if not per_label:
        return resolved
    thresholds = {label: per_label.get(label, settings.threshold) for label in labels}
    return dataclasses.replace(resolved, threshold=thresholds)


def _long_text(request: ItemRequest, label_set: LabelSet | None, index: int | None) -> LongText | None:
    if isinstance(request.long_text, LongText):
        return request.long_text
    sizes = (request.text_chunk_size, request.text_chunk_overlap, request.labels_chunk_size)
    if request.long_text is None and all(size is None for size in sizes):
        return None  # the label set's (or the default)
    return long_text_options(
        request.long_text or None, *sizes, base=label_set.long_text if label_set else TRUNCATE, index=index
    )


def check_threshold(value: float, field: str = "threshold", index: int | None = None) -> float:
    """A threshold in [0, 1], as the shortest float32 decimal; InvalidInput naming `field` otherwise.

    Wire thresholds are float32: the shortest decimal that round-trips (0.6, not 0.6000000238)
    makes a score equal to what the client wrote compare as the client expects.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"must be a number, got {type(value).__name__}", field=field, index=index)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{value} is not in [0, 1]", field=field, index=index)
    return float(str(np.float32(value)))
