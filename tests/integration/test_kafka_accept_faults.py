"""WorkerLoop.accept and submit never raise for a record, on the real runtime and builtin model.

Records are handed to `accept` as confluent_kafka Messages (the loop's Kafka clients are real but
never reach a broker here). The corpus from fixtures/hostile.py must come out with its reasons.
Failures nobody foresaw cannot be caused by any input once the codec and validation are right,
so two tests inject one with a fake and say so: a label-set table whose lookup raises (route
resolution) and a scheduler that raises a RuntimeError while preparing one item (`prepare`).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from confluent_kafka import Message
from fixtures.hostile import CORPUS
from fixtures.kafka import worker_config

from worker.config import parse_kafka_config
from worker.delivery import OrderedLane
from worker.loop import WorkerLoop

TOPIC = "in"


@pytest.fixture
def loop(kafka_runtime: Any, kafka: Any, group_id: str) -> Any:
    app = worker_config(kafka, group_id, [{"input": TOPIC, "output": "out", "label_set": "support"}])
    worker_loop = WorkerLoop(parse_kafka_config(app), app.label_sets, kafka_runtime, "builtin:minilm")
    worker_loop.lanes[(TOPIC, 0)] = OrderedLane()
    yield worker_loop
    worker_loop.lanes.clear()
    worker_loop.consumer.close()


def record(offset: int, value: bytes | None, key: bytes | None = b"k", headers: Any = None) -> Message:
    return Message(topic=TOPIC, partition=0, offset=offset, key=key, value=value, headers=headers)


def test_corpus_through_accept_and_submit(loop: Any) -> None:
    slots = [loop.accept(record(i, value)) for i, (_, value, _) in enumerate(CORPUS)]
    loop.submit([s for s in slots if s.bad is None])
    for slot, (name, _, reason) in zip(slots, CORPUS):
        if slot.bad is None:
            slot.future.result(60)
        got = slot.bad.reason if slot.bad is not None else None
        assert got == reason, f"{name}: {got} ({slot.bad.message if slot.bad else 'scored'})"


def test_too_large_record_is_cut_to_fit_its_dead_letter(loop: Any) -> None:
    slot = loop.accept(record(0, b"x" * 999_000, headers=[("h", b"v")]))
    assert slot.bad.reason == "too_large"
    size = len(slot.key) + len(slot.value) + sum(len(k) + len(v) for k, v in slot.headers)
    assert size <= loop.max_record_bytes - 16 * 1024
    assert dict(slot.headers)["error.value_bytes"] == b"999000"


class ExplodingLabelSets(dict):
    """FAKE: a label-set table whose lookup raises, standing in for a bug in route resolution."""

    def get(self, key: Any, default: Any = None) -> Any:
        if key == "explode":
            raise KeyError("lookup broke")
        return super().get(key, default)


def test_unforeseen_failure_in_resolution_is_an_internal_error_dead_letter(loop: Any) -> None:
    loop.label_sets = ExplodingLabelSets(loop.label_sets)
    bad = loop.accept(record(0, json.dumps({"text": "hello", "label_set": "explode"}).encode()))
    good = loop.accept(record(1, b"card charged twice"))
    assert bad.bad.reason == "internal_error" and bad.bad.message.startswith("KeyError")
    assert good.bad is None and good.item.labels == ("billing", "bug report", "feature request")


class ExplodingService:
    """FAKE: the real runtime, except that submitting a text containing 'boom' raises RuntimeError."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def submit(self, items: Any, *args: Any, **kwargs: Any) -> Any:
        if any("boom" in item.text for item in items):
            raise RuntimeError("tokenizer state broke")
        return self.real.submit(items, *args, **kwargs)


def test_unforeseen_failure_in_prepare_dead_letters_only_its_event(loop: Any) -> None:
    loop.runtime = ExplodingService(loop.runtime)
    texts = ["card charged twice", "boom goes the app", "refund my order"]
    slots = [loop.accept(record(i, text.encode())) for i, text in enumerate(texts)]
    loop.submit(slots)
    assert slots[1].bad.reason == "internal_error" and "RuntimeError" in slots[1].bad.message
    for slot in (slots[0], slots[2]):
        assert slot.bad is None and set(slot.future.result(60).scores) == set(slot.item.labels)


def test_a_chunk_whose_passes_overflow_the_queue_is_submitted_one_by_one(
    kafka: Any, group_id: str, own_checkpoint: Any
) -> None:
    from gliclass_core import Classifier, ClassifyItem
    from gliclass_core.config import AppConfig, BatchingConfig, ModelConfig
    from gliclass_core.runtime import Runtime

    # A uni-encoder scores labels inside the text's pass: many labels need several passes each.
    uni = Classifier.from_pretrained(str(own_checkpoint("faults-uni")), device="cpu")

    def topics(n: int) -> list[str]:
        return [f"topic number {i} of many" for i in range(n)]

    labels = next(
        topics(n)
        for n in range(2, 1000)
        if len(uni.prepare(ClassifyItem("text", tuple(topics(n)))).passes) == 5
    )
    # The loop submits chunks of max_queue // 4 = 3 events: 15 passes, more than the queue holds,
    # although each event (5 passes) fits alone.
    config = AppConfig(model=ModelConfig(device="cpu"), batching=BatchingConfig(max_wait_ms=1, max_queue=12))
    runtime = Runtime.from_config(config, loader=lambda device: uni)
    runtime.start()
    assert runtime.wait_ready(60), runtime.error
    app = worker_config(kafka, group_id, [{"input": TOPIC, "output": "out", "label_set": "support"}])
    worker_loop = WorkerLoop(parse_kafka_config(app), app.label_sets, runtime, "builtin:minilm")
    worker_loop.lanes[(TOPIC, 0)] = OrderedLane()
    try:
        values = [json.dumps({"text": f"event {i}: card charged twice", "labels": labels}) for i in range(6)]
        slots = [worker_loop.accept(record(i, v.encode())) for i, v in enumerate(values)]
        assert all(s.bad is None for s in slots)
        worker_loop.submit(slots)  # raised InvalidInput into the loop before
        deadline = time.monotonic() + 60
        while worker_loop.unsubmitted and time.monotonic() < deadline:
            time.sleep(0.05)  # the queue is full: retried as the loop retries
            worker_loop.submit(worker_loop.take_unsubmitted())
        assert not worker_loop.unsubmitted, "events still unsubmitted"
        for slot in slots:
            assert slot.bad is None and set(slot.future.result(60).scores) == set(labels)
    finally:
        worker_loop.lanes.clear()
        worker_loop.consumer.close()
        runtime.stop(grace_s=1)
