"""WorkerLoop.accept and submit never raise for a record, on the real runtime and builtin model.

Records are handed to `accept` as confluent_kafka Messages (the loop's Kafka clients are real but
never reach a broker here). The corpus from fixtures/hostile.py must come out with its reasons.
Failures nobody foresaw cannot be caused by any input once the codec and validation are right,
so two tests inject one with a fake and say so: a label-set table whose lookup raises (route
resolution) and a scheduler that raises a RuntimeError while preparing one item (`prepare`).
"""

from __future__ import annotations

import json
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


class ExplodingScheduler:
    """FAKE: the real scheduler, except that preparing a text containing 'boom' raises RuntimeError."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.max_queue = real.max_queue

    def submit(self, items: Any, **kwargs: Any) -> Any:
        if any("boom" in item.text for item in items):
            raise RuntimeError("tokenizer state broke")
        return self.real.submit(items, **kwargs)


def test_unforeseen_failure_in_prepare_dead_letters_only_its_event(loop: Any) -> None:
    loop.scheduler = ExplodingScheduler(loop.scheduler)
    texts = ["card charged twice", "boom goes the app", "refund my order"]
    slots = [loop.accept(record(i, text.encode())) for i, text in enumerate(texts)]
    loop.submit(slots)
    assert slots[1].bad.reason == "internal_error" and "RuntimeError" in slots[1].bad.message
    for slot in (slots[0], slots[2]):
        assert slot.bad is None and set(slot.future.result(60).scores) == set(slot.item.labels)


class WholeCallRefusingScheduler:
    """FAKE: the real scheduler, except that a call of several items is refused as a whole with an
    InvalidInput naming no item, as a call whose label-chunk passes together exceed max_queue is (the
    builtin bi-encoder needs one pass per item, so the real one never refuses a worker chunk so)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.max_queue = real.max_queue
        self.calls: list[int] = []

    def submit(self, items: Any, **kwargs: Any) -> Any:
        from gliclass_core.errors import InvalidInput

        self.calls.append(len(items))
        if len(items) > 1:
            raise InvalidInput("the call needs more passes than the queue holds", field="items")
        if "huge" in items[0].text:
            raise InvalidInput("the item needs more passes than the queue holds", field="labels")
        return self.real.submit(items, **kwargs)


def test_call_level_invalid_input_is_split_until_it_names_one_event(loop: Any) -> None:
    loop.scheduler = WholeCallRefusingScheduler(loop.scheduler)
    texts = ["card charged twice", "huge item", "refund my order"]
    slots = [loop.accept(record(i, text.encode())) for i, text in enumerate(texts)]
    loop.submit(slots)  # must not raise into the loop
    assert loop.scheduler.calls[0] == 3 and loop.scheduler.calls[1:] == [1, 1, 1]
    assert slots[1].bad.reason == "invalid_input" and "passes" in slots[1].bad.message
    for slot in (slots[0], slots[2]):
        assert slot.bad is None and set(slot.future.result(60).scores) == set(slot.item.labels)
