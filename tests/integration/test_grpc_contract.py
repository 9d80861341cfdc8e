"""What generic gRPC clients rely on: reflection v1 and v1alpha, rich error details, one label limit."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import code_pb2, error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status

from server.proto import classifier_pb2 as pb

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _reflect(channel: grpc.Channel, method: str, *requests: Any) -> list[Any]:
    # v1 and v1alpha messages are byte-compatible: the v1alpha classes encode and decode both.
    call = channel.stream_stream(
        method,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=10))


@pytest.mark.parametrize("method", [V1_METHOD, V1ALPHA_METHOD], ids=["v1", "v1alpha"])
def test_reflection_v1_and_v1alpha_list_services_and_serve_the_contract(
    grpc_server: Any, method: str
) -> None:
    with grpc_server.channel() as channel:
        listed, contract, reflection_file = _reflect(
            channel,
            method,
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="gliclass.v1.Classifier"),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="grpc.reflection.v1.ServerReflection"
            ),
        )
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "gliclass.v1.Classifier",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    descriptor = descriptor_pb2.FileDescriptorProto.FromString(
        contract.file_descriptor_response.file_descriptor_proto[0]
    )
    assert descriptor.name == "gliclass/v1/classifier.proto"
    methods = {m.name: m for m in descriptor.service[0].method}
    assert "Classify" in methods
    session = methods["ClassifySession"]
    assert session.client_streaming and session.server_streaming
    assert (session.input_type, session.output_type) == (
        ".gliclass.v1.SessionRequest",
        ".gliclass.v1.SessionResponse",
    )
    # A client can describe the v1 reflection service itself (grpcurl describe does).
    v1 = descriptor_pb2.FileDescriptorProto.FromString(
        reflection_file.file_descriptor_response.file_descriptor_proto[0]
    )
    assert (v1.package, v1.service[0].method[0].input_type) == (
        "grpc.reflection.v1",
        ".grpc.reflection.v1.ServerReflectionRequest",
    )


@pytest.mark.parametrize(
    ("bad_item", "field"),
    [
        (pb.Item(text="", labels=["a"]), "items[1].text"),
        (pb.Item(text="fine", labels=["a", "a"]), "items[1].labels"),
        (pb.Item(text="fine", labels=["a"], label_thresholds={"zzz": 0.5}), "items[1].label_thresholds"),
    ],
    ids=["empty-text", "duplicate-labels", "unknown-threshold-label"],
)
def test_invalid_argument_carries_a_bad_request_naming_item_and_field(
    classifier_stub: Any, bad_item: Any, field: str
) -> None:
    good = pb.Item(text="fine", labels=["a", "b"])
    with pytest.raises(grpc.RpcError) as info:
        classifier_stub.Classify(pb.ClassifyRequest(items=[good, bad_item]), timeout=30)
    status = rpc_status.from_call(info.value)
    assert status is not None, "no grpc-status-details-bin trailer"
    assert (status.code, status.message) == (code_pb2.INVALID_ARGUMENT, info.value.details())
    [detail] = status.details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    [violation] = bad_request.field_violations
    assert violation.field == field and violation.description
    assert violation.description in info.value.details()


def test_a_request_without_items_names_the_items_field(classifier_stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as info:
        classifier_stub.Classify(pb.ClassifyRequest(), timeout=30)
    status = rpc_status.from_call(info.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["items"]


def test_model_info_reports_one_label_limit(classifier_stub: Any, grpc_runtime: Any) -> None:
    info = classifier_stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
    assert info.max_labels == info.limits.max_labels_per_item > 0
    assert int(info.extra["labels_per_pass"]) == grpc_runtime.info.max_labels


def test_session_messages_to_a_model_without_sessions_fail_alone_as_failed_precondition(
    classifier_stub: Any,
) -> None:
    # The builtin model is not decoder-kv: every message is answered FAILED_PRECONDITION, in order.
    messages = [pb.SessionRequest(session_id=f"s{i}", text="hi", labels=["a"]) for i in range(3)]
    answers = list(classifier_stub.ClassifySession(iter(messages), timeout=30))
    assert [a.session_id for a in answers] == ["s0", "s1", "s2"]
    for answer in answers:
        assert (answer.error.code, answer.error.status) == (
            code_pb2.FAILED_PRECONDITION,
            "FAILED_PRECONDITION",
        )
        assert "decoder-kv" in answer.error.message
