"""long_text "chunk" and hierarchical labels end to end: real gRPC server, Kafka worker, real broker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.grpc import ServerThread, builtin_classifier, make_runtime
from fixtures.kafka import worker_config

from gliclass_core.config import parse_config
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc

REVIEWS = {"sentiment": ["positive", "negative"], "topic": {"money": ["billing"], "game": ["sports"]}}
LONG = "Refund my card payment please, I was charged twice. " * 12 + "The Lakers won the game in overtime."
CHUNKING = {"long_text": "chunk", "text_chunk_size": 200, "text_chunk_overlap": 20, "labels_chunk_size": 2}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    config = parse_config(
        {
            "model": {"id": "builtin:minilm", "device": "cpu"},
            "batching": {"max_batch_size": 32, "max_wait_ms": 2},
            "label_sets": {"reviews": {"labels": REVIEWS, "return_hierarchical": True, **CHUNKING}},
        }
    )
    runtime = make_runtime(config)
    thread = ServerThread(runtime, max_text_chars=4000)
    yield thread
    thread.close()
    runtime.stop(grace_s=1)


def _tree(nodes: Any) -> dict[str, Any]:
    return {s.label: _tree(s.children) if s.children else s.score for s in nodes}


def test_grpc_label_set_with_a_tree_and_chunking_equals_the_offline_model(server: ServerThread) -> None:
    offline = builtin_classifier().classify([LONG], REVIEWS, return_hierarchical=True, **CHUNKING)[0]
    tree = [
        pb.LabelNode(
            name="sentiment", children=[pb.LabelNode(name="positive"), pb.LabelNode(name="negative")]
        ),
        pb.LabelNode(
            name="topic",
            children=[
                pb.LabelNode(name="money", children=[pb.LabelNode(name="billing")]),
                pb.LabelNode(name="game", children=[pb.LabelNode(name="sports")]),
            ],
        ),
    ]
    items = [
        pb.Item(id="set", text=LONG, label_set="reviews"),
        pb.Item(
            id="tree",
            text=LONG,
            label_tree=tree,
            return_hierarchical=True,
            long_text="chunk",
            text_chunk_size=200,
            text_chunk_overlap=20,
            labels_chunk_size=2,
        ),
        pb.Item(id="cut", text=LONG, label_set="reviews", long_text="truncate", return_hierarchical=False),
    ]
    with server.channel() as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        results = stub.Classify(pb.ClassifyRequest(items=items), timeout=60).results
        streamed = [r.result for r in stub.ClassifyStream(iter([pb.ClassifyStreamRequest(items=items[:1])]))]
    for result in (results[0], results[1], streamed[0]):
        assert [s.label for s in result.scores] == list(offline.scores)
        assert [s.score for s in result.scores] == pytest.approx(list(offline.scores.values()), abs=1e-5)
        assert result.text_chunks == offline.text_chunks > 1
        got = _tree(result.hierarchy)
        assert got["topic"]["money"]["billing"] == pytest.approx(
            offline.hierarchy["topic"]["money"]["billing"]
        )
        assert set(got["sentiment"]) == {"positive", "negative"}
    assert results[2].text_chunks == 1 and list(results[2].hierarchy) == []
    with server.channel() as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        bad = pb.Item(text=LONG, labels=["a"], long_text="chunk", text_chunk_size=10, text_chunk_overlap=10)
        import grpc

        with pytest.raises(grpc.RpcError) as err:
            stub.Classify(pb.ClassifyRequest(items=[bad]), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "text_chunk_overlap" in err.value.details() and "item 0" in err.value.details()


def test_kafka_route_with_nested_labels_and_chunking(kafka: Any, topic_name: Any, group_id: str,
                                                     kafka_runtime: Any) -> None:  # fmt: skip
    from worker.app import KafkaWorker

    src, out, dlq = topic_name("reviews"), topic_name("reviews-out"), topic_name("reviews-dlq")
    kafka.create_topics({src: 1, out: 1, dlq: 1})
    route = {"input": src, "output": out, "dlq": dlq, "labels": REVIEWS, "return_hierarchical": True,
             **CHUNKING}  # fmt: skip
    producer = kafka.producer()
    producer.produce(src, value=json.dumps({"id": "r1", "text": LONG}).encode())
    producer.produce(
        src, value=json.dumps({"id": "r2", "text": "great match", "labels": {"g": ["x"]}}).encode()
    )
    assert producer.flush(30) == 0
    worker = KafkaWorker(kafka_runtime, worker_config(kafka, group_id, [route]))
    worker.start()
    try:
        records = kafka.read_all([out], 2, timeout=120)
    finally:
        stopper = threading.Thread(target=worker.stop, args=(20,))
        stopper.start()
        stopper.join()
    bodies = {b["id"]: b for b in (json.loads(m.value()) for m in records)}
    offline = builtin_classifier().classify([LONG], REVIEWS, return_hierarchical=True, **CHUNKING)[0]
    first = bodies["r1"]
    assert list(first["scores"]) == list(offline.scores) and first["text_chunks"] == offline.text_chunks
    assert first["hierarchy"]["topic"]["game"]["sports"] == pytest.approx(
        offline.hierarchy["topic"]["game"]["sports"], abs=1e-5
    )
    assert list(bodies["r2"]["scores"]) == ["g.x"] and list(bodies["r2"]["hierarchy"]) == ["g"]
