"""Faults the worker must ride out: the broker stops answering mid-stream, then comes back."""

from __future__ import annotations

import json
import os
import signal
import time

from fixtures.kafka import KafkaEnv, worker_config

from worker.app import KafkaWorker
from worker.broker import EmbeddedBroker


def test_broker_unreachable_then_back_resumes_without_loss(kafka_runtime, group_id):
    # A broker of its own: freezing it (SIGSTOP) must not disturb the other tests' broker.
    with EmbeddedBroker() as broker:
        env = KafkaEnv(broker.bootstrap_servers, external=False)
        env.create_topics({"in": 3, "out": 3, "in.dlq": 3})
        producer = env.producer()
        for i in range(600):
            producer.produce("in", value=json.dumps({"id": str(i), "text": f"refund order {i}"}).encode())
        producer.flush(30)
        config = worker_config(
            env,
            group_id,
            [{"input": "in", "output": "out", "label_set": "support"}],
            retry_backoff_ms=200,
            batch_size=32,
            # Deliveries time out fast while the broker is frozen, so the retry path runs.
            producer={"message.timeout.ms": 1500},
        )
        worker = KafkaWorker(kafka_runtime, config)
        worker.start()
        try:
            deadline = time.monotonic() + 60
            while worker.stats().consumed == 0:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            os.kill(broker.process.pid, signal.SIGSTOP)  # unreachable: connections hang
            time.sleep(5.0)
            os.kill(broker.process.pid, signal.SIGCONT)
            outputs = env.read_all(["out"], lambda r: len({m.value() for m in r}) >= 600, timeout=120)
            ids = {json.loads(m.value())["id"] for m in outputs}
            assert ids == {str(i) for i in range(600)}, "every event scored after the outage"
            stats = worker.stats()
            print(
                f"broker outage: {stats.delivery_retries} delivery retries, {len(outputs) - 600} duplicates"
            )
            assert worker.running
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
            worker.stop(20)
