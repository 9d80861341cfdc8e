"""Protobuf ↔ core conversion: the only module that sees the generated message types.

Request messages are decoded into the core's `ItemRequest`s (the one resolver in
`gliclass_core.service.request` turns them into items, with the label sets and limits);
`Prediction`s, model info and label sets become response messages.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gliclass_core.config import LabelSet
from gliclass_core.runtime.calls import ItemOutcome
from gliclass_core.service.request import ItemRequest, RequestLimits, resolve_item, resolve_items
from gliclass_core.types import ClassifyItem, ModelInfo, Prediction
from server.proto import classifier_pb2 as pb
from server.wire.status import status_for


class WireLimits(Protocol):
    """The request limits conversion checks and reports (the `[grpc]` section's `GrpcConfig` has them)."""

    @property
    def max_message_bytes(self) -> int: ...
    @property
    def max_items_per_request(self) -> int: ...
    @property
    def max_text_chars(self) -> int: ...
    @property
    def max_labels_per_item(self) -> int: ...
    @property
    def stream_max_in_flight(self) -> int: ...


@dataclass(frozen=True)
class ItemTimings:
    """Server-side milliseconds for one item (queue and compute may be unknown: NaN → 0)."""

    queue_ms: float
    compute_ms: float
    total_ms: float


def limits_of(config: WireLimits) -> RequestLimits:
    """The request limits `[grpc]` sets (the HTTP edge enforces the same)."""
    return RequestLimits(
        max_items_per_request=config.max_items_per_request,
        max_text_chars=config.max_text_chars,
        max_labels_per_item=config.max_labels_per_item,
    )


def items_from_proto(
    items: Sequence[pb.Item],
    label_sets: Mapping[str, LabelSet],
    config: WireLimits,
    first_index: int = 0,
) -> list[ClassifyItem]:
    """Validate request items against the limits and convert them; InvalidInput names field and index."""
    return resolve_items(
        [request_from_proto(item) for item in items], label_sets, limits_of(config), first_index
    )


def item_from_proto(
    item: pb.Item, label_sets: Mapping[str, LabelSet], config: WireLimits, index: int
) -> ClassifyItem:
    """Convert one `Item`, applying its label set's defaults; InvalidInput names the field."""
    return resolve_item(request_from_proto(item), label_sets, limits_of(config), index)


def request_from_proto(item: pb.Item) -> ItemRequest:
    """Decode an `Item` into the resolver's request: fields without presence that are unset become None."""

    def pairs(nodes: Iterable[pb.LabelNode]) -> list[tuple[str, list[Any]]]:
        return [(n.name, pairs(n.children)) for n in nodes]

    def given(name: str) -> Any:
        return getattr(item, name) if item.HasField(name) else None

    # protobuf itself bounds the nesting depth of a parsed message (100 levels); the resolver's
    # tree builder bounds it again, and the node count, before anything recursive runs on it.
    return ItemRequest(
        text=item.text,
        labels=tuple(item.labels),
        label_set=item.label_set or None,
        label_tree=pairs(item.label_tree) if item.label_tree else None,
        label_separator=given("label_separator"),
        threshold=given("threshold"),
        label_thresholds=dict(item.label_thresholds),
        multi_label=given("multi_label"),
        top_k=given("top_k"),
        prompt=given("prompt"),
        long_text=item.long_text or None,
        text_chunk_size=given("text_chunk_size"),
        text_chunk_overlap=given("text_chunk_overlap"),
        labels_chunk_size=given("labels_chunk_size"),
        return_hierarchical=given("return_hierarchical"),
    )


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


def outcome_to_proto(item: pb.Item, outcome: ItemOutcome, received: float) -> pb.ItemResult:
    """The `ItemResult` of one answered item, scores or error (`received`: its perf_counter arrival)."""
    if outcome.error is not None or outcome.prediction is None:
        error = outcome.error if outcome.error is not None else RuntimeError("no prediction")
        return error_to_proto(item.id, error, item.label_set)
    total_ms = (time.perf_counter() - received) * 1000.0
    timings = ItemTimings(
        queue_ms=float("nan") if outcome.queue_s is None else outcome.queue_s * 1000.0,
        compute_ms=float("nan") if outcome.compute_s is None else outcome.compute_s * 1000.0,
        total_ms=total_ms,
    )
    return result_to_proto(item.id, outcome.prediction, timings, item.label_set, item.return_uncalibrated)


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


def model_info_to_proto(info: ModelInfo, config: WireLimits) -> pb.GetModelInfoResponse:
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
