"""gRPC under hostile input: a real server on a real port, the builtin model.

Content-less texts and control characters are INVALID_ARGUMENT naming field and item; a message
that protobuf itself refuses (a string field holding bytes that are not UTF-8, e.g. an encoded
lone surrogate, which no well-behaved client can send) is INVALID_ARGUMENT too, unary and stream,
and the server keeps serving.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from server.proto import classifier_pb2 as pb

ENCODED_SURROGATE = b"\xed\xa0\x80"


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (pb.Item(text="\x00", labels=["sport", "finance"]), "text"),
        (pb.Item(text="\u200b", labels=["sport", "finance"]), "text"),
        (pb.Item(text="\ufeff\u200d\x01", labels=["sport", "finance"]), "text"),
        (pb.Item(text="fine", labels=["sport", "fin\x00ance"]), "labels"),
        (pb.Item(text="fine", labels=["sport", "\u200b"]), "labels"),
    ],
)
def test_content_less_text_or_label_is_invalid_argument(classifier_stub: Any, item: Any, field: str) -> None:
    good = pb.Item(text="fine", labels=["a", "b"])
    with pytest.raises(grpc.RpcError) as info:
        classifier_stub.Classify(pb.ClassifyRequest(items=[good, item]), timeout=30)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"item 1, field '{field}'" in info.value.details()


def with_bad_utf8(message: Any) -> bytes:
    """`message` serialized, its text 'x' replaced by bytes that are not UTF-8 (length byte kept right)."""
    raw = message.SerializeToString()
    assert raw.count(b"\x12\x01x") == 1
    return raw.replace(b"\x12\x01x", b"\x12\x03" + ENCODED_SURROGATE)


def test_unparsable_request_is_invalid_argument_and_the_server_keeps_serving(
    grpc_server: Any, classifier_stub: Any
) -> None:
    with grpc_server.channel() as channel:
        unary = channel.unary_unary(
            "/gliclass.v1.Classifier/Classify",
            request_serializer=lambda b: b,
            response_deserializer=pb.ClassifyResponse.FromString,
        )
        bad = with_bad_utf8(pb.ClassifyRequest(items=[pb.Item(text="x", labels=["a"])]))
        with pytest.raises(grpc.RpcError) as info:
            unary(bad, timeout=30)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "UTF-8" in info.value.details()

        stream = channel.stream_stream(
            "/gliclass.v1.Classifier/ClassifyStream",
            request_serializer=lambda b: b,
            response_deserializer=pb.ClassifyStreamResponse.FromString,
        )
        good = pb.ClassifyStreamRequest(
            items=[pb.Item(id="g", text="fine", labels=["a"])]
        ).SerializeToString()
        broken = with_bad_utf8(pb.ClassifyStreamRequest(items=[pb.Item(id="b", text="x", labels=["a"])]))
        call = stream(iter([good, broken, good]), timeout=30)
        received = []
        with pytest.raises(grpc.RpcError) as info:
            for response in call:
                received.append(response.result.id)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in info.value.details()
        assert received in ([], ["g"])  # the good item before it may be answered first
    reply = classifier_stub.Classify(
        pb.ClassifyRequest(items=[pb.Item(text="still up", labels=["a"])]), timeout=30
    )
    assert [s.label for s in reply.results[0].scores] == ["a"]


@pytest.mark.parametrize(
    "labels",
    [
        ["sport", "x" * 60_000, "x" * 60_000],  # a duplicate
        ["sport", "\u200b" * 50_000],  # content-less
        ["sport", "y" * 100_000 + "\x01"],  # a control character
    ],
)
def test_a_huge_bad_label_is_invalid_argument_with_a_short_message(classifier_stub: Any, labels: Any) -> None:
    with pytest.raises(grpc.RpcError) as info:
        classifier_stub.Classify(pb.ClassifyRequest(items=[pb.Item(text="fine", labels=labels)]), timeout=30)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "item 0, field 'labels'" in info.value.details()
    assert len(info.value.details()) < 1000  # a status that echoed the label did not reach the client
