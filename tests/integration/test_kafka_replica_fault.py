"""A replica fault mid-stream does not stall a partition: the worker re-scores and every event lands.

Kafka bulk items carry no deadline, so a batch whose futures were never resolved would hold its
partition forever. The fault is raised outside the batch's guard, after the real forward pass,
which nothing real can do in a correct program: a fault hook on the scheduler's `complete` raises
it once. Real broker, real worker, real model.
"""

from __future__ import annotations

import json
from typing import Any

from fixtures.kafka import worker_config

from gliclass_core.config import parse_config
from gliclass_core.runtime import Runtime
from worker.app import KafkaWorker

EVENTS = 200


def test_a_batch_lost_to_a_replica_fault_is_rescored_and_the_partition_moves_on(
    kafka, builtin_classifier, topic_name, group_id, monkeypatch
) -> None:
    src, out, dlq = topic_name("in"), topic_name("out"), topic_name("dlq")
    kafka.create_topics({src: 1, out: 1, dlq: 1})
    producer = kafka.producer()
    for i in range(EVENTS):
        producer.produce(src, value=json.dumps({"id": str(i), "text": f"refund my order {i}"}).encode())
    producer.flush(30)
    runtime = Runtime.from_config(
        parse_config({"model": {"id": "builtin:minilm", "device": "cpu"}}),
        loader=lambda device: builtin_classifier.replicate(device),
    )
    runtime.start()
    assert runtime.wait_ready(120), runtime.error
    complete = runtime.scheduler.complete
    calls = 0

    def second_delivery_faults(*args: Any, **kwargs: Any) -> None:  # the fault hook
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("injected fault after the forward pass")
        complete(*args, **kwargs)

    monkeypatch.setattr(runtime.scheduler, "complete", second_delivery_faults)
    config = worker_config(
        kafka, group_id, [{"input": src, "output": out, "dlq": dlq, "label_set": "support"}], batch_size=16
    )
    worker = KafkaWorker(runtime, config)
    worker.start()
    try:
        outputs = kafka.read_all([out], EVENTS, timeout=120)
        ids = [json.loads(m.value())["id"] for m in outputs]
        assert sorted(set(ids), key=int) == [str(i) for i in range(EVENTS)]
        assert ids == sorted(ids, key=int), "the partition's order held"
        assert kafka.read_all([dlq], 0, timeout=3, idle=1.0) == []
        assert calls > 2 and runtime.pool.replicas[0].faults == 1
        assert worker.running and runtime.ready
    finally:
        worker.stop(20)
        runtime.stop(grace_s=1)
