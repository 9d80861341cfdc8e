"""Protobuf ↔ core conversion: the only module that sees the generated message types.

Requests become `ClassifyItem`s (resolving named label sets and enforcing the edge's limits);
`Prediction`s, model info and label sets become response messages.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gliclass_core.config import LabelSet
from gliclass_core.errors import InvalidInput
from gliclass_core.label_sets import item_settings
from gliclass_core.processing.hierarchy import DEFAULT_SEPARATOR, flatten, tree_from_nodes
from gliclass_core.processing.long_text import long_text_options
from gliclass_core.processing.validation import check_labels
from gliclass_core.types import TRUNCATE, ClassifyItem, LabelNode, LongText, ModelInfo, Prediction
from server.grpc.config import GrpcConfig
from server.grpc.errors import status_for
from server.proto import classifier_pb2 as pb


@dataclass(frozen=True)
class ItemTimings:
    """Server-side milliseconds for one item (queue and compute may be unknown: NaN → 0)."""

    queue_ms: float
    compute_ms: float
    total_ms: float


def items_from_proto(
    items: Sequence[pb.Item],
    label_sets: Mapping[str, LabelSet],
    config: GrpcConfig,
    first_index: int = 0,
) -> list[ClassifyItem]:
    """Validate request items against the limits and convert them; InvalidInput names field and index."""
    if not items:
        raise InvalidInput("at least one item is required", field="items")
    if len(items) > config.max_items_per_request:
        raise InvalidInput(
            f"{len(items)} items in one message, the limit is {config.max_items_per_request}", field="items"
        )
    return [item_from_proto(item, label_sets, config, first_index + i) for i, item in enumerate(items)]


def item_from_proto(
    item: pb.Item, label_sets: Mapping[str, LabelSet], config: GrpcConfig, index: int
) -> ClassifyItem:
    """Convert one `Item`, applying its label set's defaults; InvalidInput names the field."""
    if not item.text:
        raise InvalidInput("must be a non-empty string", field="text", index=index)
    if len(item.text) > config.max_text_chars:
        raise InvalidInput(
            f"{len(item.text)} characters, the limit is {config.max_text_chars}", field="text", index=index
        )
    label_set: LabelSet | None = None
    tree = None
    if item.labels and item.label_set:
        raise InvalidInput("give either 'labels' or 'label_set', not both", field="label_set", index=index)
    if item.label_tree and (item.labels or item.label_set):
        raise InvalidInput("give only one of 'labels', 'label_set' and 'label_tree'", field="label_tree",
                           index=index)  # fmt: skip
    if item.label_tree:
        tree = _tree_from_proto(item, index)
        labels = flatten(tree)
    elif item.label_set:
        label_set = label_sets.get(item.label_set)
        if label_set is None:
            known = ", ".join(sorted(label_sets)) or "none configured"
            raise InvalidInput(
                f"unknown label set {item.label_set!r} (known: {known})", field="label_set", index=index
            )
        labels = tuple(label_set.labels)
    elif item.labels:
        labels = tuple(item.labels)
    else:
        raise InvalidInput("give 'labels' or 'label_set'", field="labels", index=index)
    if len(labels) > config.max_labels_per_item:
        raise InvalidInput(
            f"{len(labels)} labels, the limit is {config.max_labels_per_item}", field="labels", index=index
        )
    check_labels(labels, index)
    threshold = _check_threshold(item.threshold, "threshold", index) if item.HasField("threshold") else None
    unknown = sorted(set(item.label_thresholds) - set(labels))
    if unknown:
        raise InvalidInput(f"not among the item's labels: {unknown}", field="label_thresholds", index=index)
    per_label = {k: _check_threshold(v, "label_thresholds", index) for k, v in item.label_thresholds.items()}
    if item.HasField("top_k") and item.top_k < 1:
        raise InvalidInput("must be >= 1 when given", field="top_k", index=index)
    settings = item_settings(
        label_set,
        threshold=threshold,
        multi_label=item.multi_label if item.HasField("multi_label") else None,
        top_k=item.top_k if item.HasField("top_k") else None,
        prompt=item.prompt if item.HasField("prompt") else None,
        long_text=_long_text_from_proto(item, label_set, index),
        return_hierarchical=item.return_hierarchical if item.HasField("return_hierarchical") else None,
    )
    if label_set is not None and label_set.label_tree is not None:
        tree = label_set.label_tree
    resolved = settings.item(item.text, labels, tree)
    if not per_label:
        return resolved
    thresholds = {label: per_label.get(label, settings.threshold) for label in labels}
    return dataclasses.replace(resolved, threshold=thresholds)


def _tree_from_proto(item: pb.Item, index: int) -> tuple[LabelNode, ...]:
    separator = item.label_separator if item.HasField("label_separator") else DEFAULT_SEPARATOR

    def pairs(nodes: Iterable[pb.LabelNode]) -> list[tuple[str, list[Any]]]:
        return [(n.name, pairs(n.children)) for n in nodes]

    # protobuf itself bounds the nesting depth of a parsed message (100 levels); the tree builder
    # bounds it again, and the node count, before anything recursive runs on it.
    return tree_from_nodes(pairs(item.label_tree), separator, field="label_tree", index=index)


def _long_text_from_proto(item: pb.Item, label_set: LabelSet | None, index: int) -> LongText:
    base = label_set.long_text if label_set else TRUNCATE
    return long_text_options(
        item.long_text or None,
        item.text_chunk_size if item.HasField("text_chunk_size") else None,
        item.text_chunk_overlap if item.HasField("text_chunk_overlap") else None,
        item.labels_chunk_size if item.HasField("labels_chunk_size") else None,
        base=base,
        index=index,
    )


def _check_threshold(value: float, field: str, index: int) -> float:
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{value} is not in [0, 1]", field=field, index=index)
    # The wire type is float32: take the shortest decimal that round-trips (0.6, not 0.6000000238),
    # so a score equal to what the client wrote compares as the client expects.
    return float(str(np.float32(value)))


def result_to_proto(
    item_id: str,
    prediction: Prediction,
    timings: ItemTimings,
    label_set: str = "",
    uncalibrated: bool = False,
) -> pb.ItemResult:
    """Build the `ItemResult` of a computed item (`uncalibrated`: the item asked for raw scores too)."""
    raw = prediction.uncalibrated_scores if uncalibrated else None
    scores = [
        pb.LabelScore(label=label, score=score)
        if raw is None
        else pb.LabelScore(label=label, score=score, uncalibrated_score=raw[label])
        for label, score in prediction.scores.items()
    ]
    return pb.ItemResult(
        id=item_id,
        scores=scores,
        labels=prediction.labels,
        timings=pb.Timings(
            queue_ms=_finite(timings.queue_ms),
            compute_ms=_finite(timings.compute_ms),
            total_ms=timings.total_ms,
        ),
        label_chunks=prediction.label_chunks,
        truncated=prediction.truncated,
        label_set=label_set,
        hierarchy=_hierarchy_to_proto(prediction.hierarchy) if prediction.hierarchy is not None else [],
        text_chunks=prediction.text_chunks,
    )


def _hierarchy_to_proto(tree: Mapping[str, Any]) -> list[pb.LabelScore]:
    out = []
    for name, value in tree.items():
        if isinstance(value, Mapping):
            out.append(pb.LabelScore(label=name, children=_hierarchy_to_proto(value)))
        else:
            out.append(pb.LabelScore(label=name, score=float(value)))
    return out


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def error_to_proto(item_id: str, exc: BaseException, label_set: str = "") -> pb.ItemResult:
    """Build the `ItemResult` of an item that failed on its own (ClassifyStream)."""
    code, message = status_for(exc)
    field = getattr(exc, "field", None) or ""
    return pb.ItemResult(
        id=item_id,
        label_set=label_set,
        error=pb.ItemError(code=code.value[0], status=code.name, message=message, field=field),
    )


def classify_response(results: Iterable[pb.ItemResult]) -> pb.ClassifyResponse:
    """Wrap unary results."""
    return pb.ClassifyResponse(results=list(results))


def stream_response(result: pb.ItemResult) -> pb.ClassifyStreamResponse:
    """Wrap one stream result."""
    return pb.ClassifyStreamResponse(result=result)


def model_info_to_proto(info: ModelInfo, config: GrpcConfig) -> pb.GetModelInfoResponse:
    """Describe the model and the limits this server enforces."""
    return pb.GetModelInfoResponse(
        model_id=info.model_id,
        architecture=info.architecture,
        device=info.device,
        dtype=info.dtype,
        max_length=info.max_length,
        # One label limit for clients: the per-item limit this server enforces. The model's own
        # per-pass figure is a chunking detail, reported beside the other model facts.
        max_labels=config.max_labels_per_item,
        extra={**{str(k): str(v) for k, v in info.extra.items()}, "labels_per_pass": str(info.max_labels)},
        limits=pb.Limits(
            max_message_bytes=config.max_message_bytes,
            max_items_per_request=config.max_items_per_request,
            max_text_chars=config.max_text_chars,
            max_labels_per_item=config.max_labels_per_item,
            stream_max_in_flight=config.stream_max_in_flight,
        ),
    )


def label_sets_to_proto(label_sets: Mapping[str, LabelSet]) -> pb.ListLabelSetsResponse:
    """List the configured label sets, sorted by name."""
    out = []
    for name in sorted(label_sets):
        s = label_sets[name]
        msg = pb.LabelSet(name=name, labels=list(s.labels), threshold=s.threshold, multi_label=s.multi_label)
        if s.top_k is not None:
            msg.top_k = s.top_k
        if s.prompt is not None:
            msg.prompt = s.prompt
        out.append(msg)
    return pb.ListLabelSetsResponse(label_sets=out)
