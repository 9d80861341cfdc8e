"""Admission keeps room for interactive work: a Kafka backlog fills only the bulk share of the queue.

A real worker on the real broker feeds the real builtin model (one CPU replica) with long events
faster than it can score them, so bulk items fill their share (`[batching] bulk_queue_share`) of
`max_queue` and the worker is refused (Overloaded) and retries; a gRPC call made meanwhile is
admitted and answered.
"""

from __future__ import annotations

import json
import time

import pytest
from fixtures.grpc import ServerThread, builtin_classifier
from fixtures.kafka import worker_config

from gliclass_core.config import parse_config
from gliclass_core.runtime import Runtime
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc
from worker.app import KafkaWorker

MAX_QUEUE = 200
BULK_SHARE = 0.5
LONG = "The invoice shows two charges for one order and the app crashed when I asked for a refund. "


def test_a_kafka_backlog_that_fills_its_share_leaves_grpc_calls_admitted(kafka, topic_name, group_id) -> None:
    source, out, dlq = topic_name("backlog"), topic_name("backlog-out"), topic_name("backlog-dlq")
    kafka.create_topics({source: 2, out: 2, dlq: 2})
    producer = kafka.producer()
    for i in range(1500):
        producer.produce(
            source, json.dumps({"id": str(i), "text": f"{i} {LONG * 6}"}).encode(), partition=i % 2
        )
    assert producer.flush(30) == 0

    route = {"input": source, "output": out, "dlq": dlq, "label_set": "support"}
    config = worker_config(kafka, group_id, [route])
    config = parse_config(
        {
            **config.raw,
            "batching": {"max_queue": MAX_QUEUE, "bulk_queue_share": BULK_SHARE, "max_batch_size": 16},
        }
    )
    runtime = Runtime.from_config(config, loader=lambda device: builtin_classifier(device))
    runtime.start()
    assert runtime.wait_ready(120), runtime.error
    scheduler = runtime.scheduler
    assert scheduler.bulk_limit == int(MAX_QUEUE * BULK_SHARE)
    worker = KafkaWorker(runtime, config)
    server = ServerThread(runtime)
    try:
        worker.start()
        deadline = time.monotonic() + 60
        # The backlog has filled the bulk share: the worker's submissions are being refused.
        while not (
            scheduler.stats().rejected_items > 0 and scheduler.stats().queue_depth_bulk > MAX_QUEUE // 3
        ):
            assert time.monotonic() < deadline, f"the worker never filled its share: {scheduler.stats()}"
            time.sleep(0.02)
        before = scheduler.stats()
        assert before.queue_depth_bulk <= scheduler.bulk_limit
        items = [
            pb.Item(id=str(i), text=f"my card was charged twice {i}", label_set="support") for i in range(20)
        ]
        with server.channel() as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            reply = stub.Classify(pb.ClassifyRequest(items=items), timeout=60)
        assert [r.id for r in reply.results] == [str(i) for i in range(20)]
        assert all(r.scores for r in reply.results)
        after = scheduler.stats()
        assert after.rejected_items >= before.rejected_items  # the worker kept being refused meanwhile
        assert worker.running and worker.error is None
    finally:
        worker.stop(drain_timeout=0)
        server.close()
        runtime.stop(grace_s=0)


def test_bulk_is_refused_at_its_share_while_interactive_fills_the_rest() -> None:
    from gliclass_core import ClassifyItem
    from gliclass_core.errors import InvalidInput, Overloaded
    from gliclass_core.runtime import BatchPolicy, Priority, Scheduler

    scheduler = Scheduler(BatchPolicy(max_wait_s=60), max_queue=10, bulk_queue_share=0.6)
    scheduler.open(builtin_classifier("cpu"), replicas=0)  # nothing pulls: what is queued stays
    item = ClassifyItem("my card was charged twice", ("billing", "bug report"))
    try:
        scheduler.submit([item] * 6, priority=Priority.BULK)
        with pytest.raises(Overloaded, match="bulk"):
            scheduler.submit([item], priority=Priority.BULK)
        with pytest.raises(InvalidInput):  # more than the bulk share in one call: it could never fit
            scheduler.submit([item] * 7, priority=Priority.BULK)
        scheduler.submit([item] * 4, priority=Priority.INTERACTIVE)  # the reserve is there
        with pytest.raises(Overloaded):
            scheduler.submit([item], priority=Priority.INTERACTIVE)
    finally:
        scheduler.close(0, drain=False)


@pytest.mark.parametrize("share", [0, -0.5, 1.5, "half", True])
def test_bulk_queue_share_must_be_a_share(share: object) -> None:
    from gliclass_core.config import ConfigError

    with pytest.raises(ConfigError, match="bulk_queue_share"):
        parse_config({"batching": {"bulk_queue_share": share}})
