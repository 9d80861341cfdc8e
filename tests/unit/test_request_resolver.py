"""One request resolver: the same request by gRPC, HTTP or Kafka becomes the same item, or fails
with the same reason naming the same field (hypothesis, over valid and hostile requests).

gRPC: the binary `Item` message → `request_from_proto`. HTTP: the proto's JSON mapping parsed by
the HTTP edge's body decoder. Kafka: the event's JSON value, decoded by the worker's codec, on a
route whose settings are the request's (a route cannot carry an out-of-range threshold: its config
is refused at start, so those requests are compared between gRPC and HTTP only).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gliclass_core.config import LabelSet
from gliclass_core.errors import InvalidInput
from gliclass_core.service import ItemRequest, RequestLimits, resolve_item, resolve_items
from gliclass_core.types import ClassifyItem
from server.http.body import decode
from server.proto import classifier_pb2 as pb
from server.wire.convert import request_from_proto
from worker.codec import BadEvent, decode_event
from worker.config import Route
from worker.routes import resolve

LABEL_SETS = {
    "support": LabelSet(name="support", labels=("billing", "bug"), threshold=0.3, multi_label=False),
}
LIMITS = RequestLimits(max_items_per_request=4, max_text_chars=50, max_labels_per_item=3)
#: The field a Kafka dead-letter reason stands for.
REASON_FIELD = {"unknown_label_set": "label_set", "missing_labels": "labels", "invalid_labels": "labels"}

texts = st.one_of(st.just(""), st.text(alphabet="abc xyz", min_size=1, max_size=60).filter(str.strip))
labels = st.lists(st.sampled_from(["billing", "bug", "x", "y", "z"]), max_size=4, unique=True)
label_sets = st.sampled_from([None, "support", "nope"])
thresholds = st.one_of(st.none(), st.floats(-0.5, 1.5, allow_nan=False, width=32), st.just(float("nan")))


def requests_() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"text": texts, "labels": labels},
        optional={
            "label_set": label_sets,
            "threshold": thresholds,
            "top_k": st.integers(0, 4),  # uint32 on the wire
            "multi_label": st.booleans(),
        },
    )


def outcome(fn: Any) -> ClassifyItem | tuple[str, str | None]:
    try:
        return fn()
    except InvalidInput as exc:
        return ("invalid", exc.field)


def via_grpc(request: dict[str, Any]) -> ClassifyItem | tuple[str, str | None]:
    fields = {k: v for k, v in request.items() if v is not None}
    wire = pb.Item(**fields).SerializeToString()
    item = pb.Item()
    item.ParseFromString(wire)
    return outcome(lambda: resolve_item(request_from_proto(item), LABEL_SETS, LIMITS, 0))


def via_http(request: dict[str, Any]) -> ClassifyItem | tuple[str, str | None]:
    fields = {k: v for k, v in request.items() if v is not None}
    if "label_set" in fields:
        fields["labelSet"] = fields.pop("label_set")  # the JSON mapping's spelling
    if fields.get("threshold") != fields.get("threshold"):
        fields["threshold"] = "NaN"  # the JSON mapping's spelling (a bare NaN is not JSON)
    body = json.dumps({"items": [fields]}).encode()

    def run() -> ClassifyItem:
        decoded = decode(body, pb.ClassifyRequest(), LIMITS)
        return resolve_items(decoded.requests, LABEL_SETS, LIMITS)[0]

    return outcome(run)


def via_kafka(request: dict[str, Any]) -> ClassifyItem | tuple[str, str | None] | None:
    """None when Kafka cannot carry the request (settings a route's config would refuse)."""
    threshold = request.get("threshold")
    top_k = request.get("top_k")
    if (threshold is not None and not 0.0 <= threshold <= 1.0) or (top_k is not None and top_k < 1):
        return None
    if request.get("labels") and request.get("label_set"):
        return None  # an event's own labels win over its label_set (the route decides settings)
    if not request["text"]:
        return None  # the codec refuses an empty value before any route is looked at
    event: dict[str, Any] = {"text": request["text"]}
    if request.get("labels"):
        event["labels"] = request["labels"]
    if request.get("label_set"):
        event["label_set"] = request["label_set"]
    route = Route(
        input="in",
        output="out",
        dlq="dlq",
        threshold=threshold,
        multi_label=request.get("multi_label"),
        top_k=top_k,
        max_text_chars=LIMITS.max_text_chars,
        over_length="reject",
    )
    try:
        decoded = decode_event(json.dumps(event).encode())
        return resolve(decoded, route, LABEL_SETS).item
    except BadEvent as bad:
        if bad.reason == "text_too_long":
            return ("invalid", "text")
        return ("invalid", REASON_FIELD.get(bad.reason, bad.reason))


@settings(max_examples=300, deadline=None)
@given(requests_())
def test_every_edge_resolves_a_request_the_same_way(request: dict[str, Any]) -> None:
    grpc_item = via_grpc(request)
    assert via_http(request) == grpc_item
    kafka_item = via_kafka(request)
    if kafka_item is None:
        return
    if isinstance(grpc_item, tuple) and grpc_item[1] == "labels" and len(request.get("labels", [])) > 3:
        return  # over the call's label limit: Kafka's limit is the codec's (MAX_LABELS)
    assert kafka_item == grpc_item


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"text": "t", "labels": ["x"], "label_set": "support"}, "label_set"),
        ({"text": "t", "label_set": "nope"}, "label_set"),
        ({"text": "t"}, "labels"),
        ({"text": "", "labels": ["x"]}, "text"),
        ({"text": "t" * 51, "labels": ["x"]}, "text"),
        ({"text": "t", "labels": ["a", "b", "c", "d"]}, "labels"),
        ({"text": "t", "labels": ["x"], "threshold": 1.5}, "threshold"),
        ({"text": "t", "labels": ["x"], "top_k": 0}, "top_k"),
    ],
)
def test_refusals_name_the_field(request_: dict[str, Any], field: str) -> None:
    assert via_grpc(request_) == ("invalid", field)
    assert via_http(request_) == ("invalid", field)


def test_item_settings_over_label_set_over_defaults() -> None:
    limits = RequestLimits()
    named = resolve_item(ItemRequest(text="t", label_set="support"), LABEL_SETS, limits)
    assert (named.labels, named.threshold, named.multi_label) == (("billing", "bug"), 0.3, False)
    own = resolve_item(ItemRequest(text="t", label_set="support", threshold=0.6), LABEL_SETS, limits)
    assert own.threshold == 0.6
    inline = resolve_item(ItemRequest(text="t", labels=("a",)), LABEL_SETS, limits)
    assert (inline.threshold, inline.multi_label) == (0.5, True)
    fallback = resolve_item(
        ItemRequest(text="t", labels=("a",)), LABEL_SETS, limits, defaults=LABEL_SETS["support"]
    )
    assert (fallback.threshold, fallback.multi_label) == (0.3, False)


def test_too_many_items_are_refused_before_parsing() -> None:
    body = b'{"items":[' + b"{}," * 10_000 + b"{}]}"
    with pytest.raises(InvalidInput) as info:
        decode(body, pb.ClassifyRequest(), LIMITS)
    assert info.value.field == "items" and "10001 items" in str(info.value)
