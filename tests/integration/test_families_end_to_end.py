"""A cross-attn (multilingual-style) checkpoint served end to end: over gRPC and through the Kafka worker.

The checkpoint is written by the reference package (tests/fixtures/reference.py): cross-attn scorer
over the text tokens (pooling "pass"), class-token pooling "average", extract_text_features, as the
published multilingual models are configured. One runtime loads it from its directory, a real gRPC
server on a free port and a real Kafka worker on the test broker share it, and both must return the
reference pipeline's probabilities.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import grpc
import numpy as np
import pytest
from fixtures.grpc import TEST_GRPC_CONFIG, ServerThread
from fixtures.kafka import CONSUMER_DEFAULTS
from fixtures.reference import reference_outputs

from gliclass_core.config import parse_config
from gliclass_core.runtime import Runtime
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc as pb_grpc
from worker.app import KafkaWorker

pytestmark = pytest.mark.reference

LABELS = ["travel", "sport", "finance and economy", "politics"]
TEXTS = [
    "Our team won the championship in overtime last night.",
    "La banque centrale a relevé ses taux d'intérêt.",
    "Mañana viajo a Lisboa con mis amigos.",
    "Die Regierung hat die Wahl verloren.",
]
MULTILINGUAL = dict(
    pooling_strategy="pass",
    scorer_type="cross-attn",
    class_token_pooling="average",
    extract_text_features=True,
    prompt_first=True,
)


@pytest.fixture(scope="module")
def cross_attn(reference_checkpoint) -> tuple[str, np.ndarray]:
    """The checkpoint directory and the reference pipeline's probabilities for TEXTS."""
    directory = reference_checkpoint("e2e-multilingual-cross-attn", **MULTILINGUAL)
    logits = np.array(reference_outputs(directory, TEXTS, LABELS, [{}])[0]["logits"])
    assert np.ptp(logits) > 0.1  # scores that differ across texts and labels: a meaningful comparison
    return str(directory), 1 / (1 + np.exp(-logits))


@pytest.fixture(scope="module")
def runtime(cross_attn, kafka) -> Any:
    directory, _ = cross_attn
    config = parse_config(
        {
            "model": {"id": directory, "device": "cpu"},
            "batching": {"max_batch_size": 8, "max_wait_ms": 5},
            "label_sets": {"topics": {"labels": LABELS, "threshold": 0.5}},
            "grpc": TEST_GRPC_CONFIG,
        }
    )
    rt = Runtime.from_config(config)
    rt.start()
    assert rt.wait_ready(300), f"runtime failed to start: {rt.error}"
    assert rt.classifier.config.scorer == "cross-attn"
    yield rt
    rt.stop(grace_s=1)


def test_cross_attn_checkpoint_over_grpc(runtime, cross_attn) -> None:
    _, expected = cross_attn
    server = ServerThread(runtime)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ClassifierStub(channel)
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
            assert info.extra["scorer"] == "cross-attn" and info.extra["pooling"] == "pass"
            items = [pb.Item(id=f"t{i}", text=t, labels=LABELS) for i, t in enumerate(TEXTS)]
            unary = stub.Classify(pb.ClassifyRequest(items=items), timeout=60)
            requests = [
                pb.ClassifyStreamRequest(items=[pb.Item(id=f"s{i}", text=t, label_set="topics")])
                for i, t in enumerate(TEXTS)
            ]
            streamed = [r.result for r in stub.ClassifyStream(iter(requests), timeout=60)]
    finally:
        server.close()
    for results in (unary.results, streamed):
        got = np.array([[s.score for s in r.scores] for r in results])
        assert [[s.label for s in r.scores] for r in results] == [LABELS] * len(TEXTS)
        assert np.abs(got - expected).max() < 1e-5
        for r, row in zip(results, expected):
            assert list(r.labels) == [LABELS[i] for i in np.argsort(-row, kind="stable") if row[i] >= 0.5]
    assert [r.id for r in streamed] == [f"s{i}" for i in range(len(TEXTS))]


def test_cross_attn_checkpoint_through_the_kafka_worker(runtime, cross_attn, kafka, topic_name, group_id):
    directory, expected = cross_attn
    src, out = topic_name("multilingual-in"), topic_name("multilingual-out")
    kafka.create_topics({src: 2, out: 2})
    config = parse_config(
        {
            "model": {"id": directory, "device": "cpu"},
            "label_sets": {"topics": {"labels": LABELS, "threshold": 0.5}},
            "kafka": {
                "bootstrap_servers": kafka.bootstrap_servers,
                "group_id": group_id,
                "consumer": dict(CONSUMER_DEFAULTS),
                "routes": [{"input": src, "output": out, "label_set": "topics"}],
            },
        }
    )
    producer = kafka.producer()
    for i, text in enumerate(TEXTS):
        producer.produce(src, value=json.dumps({"id": f"k{i}", "text": text}).encode(), partition=i % 2)
    assert producer.flush(30) == 0
    worker = KafkaWorker(runtime, config)
    worker.start()
    try:
        records = kafka.read_all([out], len(TEXTS), timeout=120)
    finally:
        stopper = threading.Thread(target=worker.stop, args=(20,))
        stopper.start()
        stopper.join()
    bodies = {json.loads(m.value())["id"]: json.loads(m.value()) for m in records}
    assert sorted(bodies) == [f"k{i}" for i in range(len(TEXTS))]
    for i, row in enumerate(expected):
        body = bodies[f"k{i}"]
        assert list(body["scores"]) == LABELS and body["label_set"] == "topics"
        assert np.abs(np.array(list(body["scores"].values())) - row).max() < 2e-6  # rounded to 6 places
