"""Every Classifier RPC, health and reflection against a real server (port 0, builtin model)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from fixtures.grpc import TEST_LABEL_SETS
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.proto import classifier_pb2 as pb

SUPPORT = TEST_LABEL_SETS["support"]["labels"]
TEXTS = [
    "I was charged twice for my subscription this month",
    "The app crashes every time I open the settings page",
    "Please add a dark mode to the dashboard",
    "What a wonderful day, I love this product",
]


def test_classify_scores_every_label_in_order_like_the_offline_model(
    classifier_stub: Any, grpc_runtime: Any
) -> None:
    items = [pb.Item(id=f"t{i}", text=text, labels=SUPPORT) for i, text in enumerate(TEXTS)]
    reply = classifier_stub.Classify(pb.ClassifyRequest(items=items), timeout=30)
    offline = grpc_runtime.classifier.classify(TEXTS, list(SUPPORT))
    assert [r.id for r in reply.results] == ["t0", "t1", "t2", "t3"]
    for result, expected in zip(reply.results, offline):
        assert [s.label for s in result.scores] == list(SUPPORT)
        assert [s.score for s in result.scores] == pytest.approx(list(expected.scores.values()), abs=1e-4)
        assert list(result.labels) == expected.labels
        assert result.timings.total_ms > 0 and result.label_chunks >= 1
        # The scheduler reports where the time went: waiting in the queue, then the batch's forward pass.
        t = result.timings
        assert t.compute_ms > 0 and t.queue_ms >= 0 and t.total_ms >= t.compute_ms
        assert not result.HasField("error")


def test_classify_applies_item_settings_and_label_sets(classifier_stub: Any) -> None:
    items = [
        pb.Item(id="set", text=TEXTS[3], label_set="sentiment"),  # the set is single-label
        pb.Item(id="multi", text=TEXTS[3], label_set="sentiment", multi_label=True, threshold=0.0),
        pb.Item(id="top", text=TEXTS[0], labels=SUPPORT, threshold=0.0, top_k=2),
        pb.Item(id="none", text=TEXTS[0], labels=SUPPORT, threshold=1.0),
    ]
    by_id = {r.id: r for r in classifier_stub.Classify(pb.ClassifyRequest(items=items), timeout=30).results}
    assert len(by_id["set"].labels) == 1 and by_id["set"].label_set == "sentiment"
    assert by_id["set"].labels[0] == max(by_id["set"].scores, key=lambda s: s.score).label
    assert sorted(by_id["multi"].labels) == ["negative", "positive"]
    top = sorted(by_id["top"].scores, key=lambda s: -s.score)
    assert list(by_id["top"].labels) == [s.label for s in top[:2]]
    assert list(by_id["none"].labels) == [] and len(by_id["none"].scores) == 3


@pytest.mark.parametrize(
    ("bad_item", "field"),
    [
        (pb.Item(text="", labels=["a"]), "text"),
        (pb.Item(text="x" * 4001, labels=["a"]), "text"),
        (pb.Item(text="hello"), "labels"),
        (pb.Item(text="hello", labels=[f"l{i}" for i in range(17)]), "labels"),
        (pb.Item(text="hello", label_set="no-such-set"), "label_set"),
        (pb.Item(text="hello", labels=["a"], threshold=2.0), "threshold"),
    ],
)
def test_invalid_item_fails_the_call_naming_field_and_index(
    classifier_stub: Any, bad_item: Any, field: str
) -> None:
    good = pb.Item(text="fine", labels=["a", "b"])
    with pytest.raises(grpc.RpcError) as info:
        classifier_stub.Classify(pb.ClassifyRequest(items=[good, good, bad_item]), timeout=30)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"item 2, field '{field}'" in info.value.details()


def test_request_limits(classifier_stub: Any) -> None:
    item = pb.Item(text="fine", labels=["a"])
    with pytest.raises(grpc.RpcError) as info:
        classifier_stub.Classify(pb.ClassifyRequest(items=[item] * 33), timeout=30)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "limit is 32" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        classifier_stub.Classify(pb.ClassifyRequest(), timeout=30)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "'items'" in info.value.details()
    # Over max_message_bytes (256 KiB) gRPC itself refuses the message.
    huge = pb.Item(text="x" * 300_000, labels=["a"])
    with pytest.raises(grpc.RpcError) as info:
        classifier_stub.Classify(pb.ClassifyRequest(items=[huge]), timeout=30)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_stream_answers_each_item_in_order_and_reports_bad_items_inline(classifier_stub: Any) -> None:
    texts = TEXTS * 5  # 20 items, more than the in-flight bound of 4
    requests = [
        pb.ClassifyStreamRequest(items=[pb.Item(id=f"s{i}", text=t, labels=SUPPORT)])
        for i, t in enumerate(texts)
    ]
    # A two-item message and a bad item in the middle: the stream goes on past it.
    requests.insert(
        3,
        pb.ClassifyStreamRequest(
            items=[
                pb.Item(id="pair-a", text=TEXTS[0], label_set="support"),
                pb.Item(id="pair-b", text=TEXTS[1], label_set="support"),
            ]
        ),
    )
    requests.insert(7, pb.ClassifyStreamRequest(items=[pb.Item(id="bad", text="oops")]))
    responses = list(classifier_stub.ClassifyStream(iter(requests), timeout=60))
    sent_ids = [item.id for request in requests for item in request.items]
    assert [r.result.id for r in responses] == sent_ids
    bad = next(r.result for r in responses if r.result.id == "bad")
    assert (bad.error.status, bad.error.code, bad.error.field) == ("INVALID_ARGUMENT", 3, "labels")
    assert "item 8" in bad.error.message  # its index within the stream (the pair counts as two)
    unary = classifier_stub.Classify(
        pb.ClassifyRequest(items=[pb.Item(text=TEXTS[1], labels=SUPPORT)]), timeout=30
    )
    streamed = next(r.result for r in responses if r.result.id == "s1")
    assert [s.score for s in streamed.scores] == pytest.approx(
        [s.score for s in unary.results[0].scores], abs=1e-4
    )
    assert all(not r.result.HasField("error") for r in responses if r.result.id != "bad")
    assert streamed.timings.compute_ms > 0 and streamed.timings.queue_ms >= 0
    assert streamed.timings.total_ms >= streamed.timings.compute_ms


def test_stream_with_no_items_ends_cleanly(classifier_stub: Any) -> None:
    assert list(classifier_stub.ClassifyStream(iter([pb.ClassifyStreamRequest()]), timeout=30)) == []


def test_model_info_and_label_sets(classifier_stub: Any, grpc_runtime: Any) -> None:
    info = classifier_stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
    assert info.model_id == "builtin:minilm" and info.device == "cpu"
    assert info.architecture == grpc_runtime.info.architecture and info.max_length > 0 and info.max_labels > 0
    assert (
        info.limits.max_items_per_request,
        info.limits.max_text_chars,
        info.limits.stream_max_in_flight,
    ) == (32, 4000, 4)
    sets = classifier_stub.ListLabelSets(pb.ListLabelSetsRequest(), timeout=30).label_sets
    assert [s.name for s in sets] == ["sentiment", "support"]
    assert list(sets[1].labels) == SUPPORT and sets[0].multi_label is False and not sets[0].HasField("top_k")


def test_health_is_serving_for_the_server_and_the_service(grpc_server: Any) -> None:
    with grpc_server.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "gliclass.v1.Classifier"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services_and_serves_the_contract(grpc_server: Any) -> None:
    with grpc_server.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="gliclass.v1.Classifier"),
        ]
        listed, file_reply = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"gliclass.v1.Classifier", "grpc.health.v1.Health"} <= names
    from google.protobuf import descriptor_pb2

    descriptor = descriptor_pb2.FileDescriptorProto.FromString(
        file_reply.file_descriptor_response.file_descriptor_proto[0]
    )
    assert descriptor.name == "gliclass/v1/classifier.proto"
    assert [m.name for m in descriptor.service[0].method] == [
        "Classify",
        "ClassifyStream",
        "GetModelInfo",
        "ListLabelSets",
        "ClassifySession",
    ]
