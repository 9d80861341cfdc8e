"""The worker's counters stay bounded and can be read from any thread while the loop writes them.

A real worker on the real broker and the real builtin model scores events that each bring 1,000
labels nobody used before (threshold 0: every one is predicted and counted).
"""

from __future__ import annotations

import json
import threading
import time

from fixtures.kafka import worker_config
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.app import KafkaWorker
from worker.state import MAX_ROUTES, OTHER, TOP_LABELS, TOP_REASONS, TopCounter, WorkerStats

EVENTS = 2  # 2,000 labels never seen before: 50 times what the counters may hold
LABELS_PER_EVENT = 1000


def test_every_event_bringing_1000_new_labels_keeps_the_counters_flat(
    kafka, kafka_runtime, topic_name, group_id
) -> None:
    src, out, dlq = topic_name("fresh"), topic_name("fresh-out"), topic_name("fresh-dlq")
    kafka.create_topics({src: 1, out: 1, dlq: 1})
    producer = kafka.producer()
    for i in range(EVENTS):
        labels = [f"fresh label {i}-{n}" for n in range(LABELS_PER_EVENT)]
        producer.produce(src, json.dumps({"id": str(i), "text": f"event {i}", "labels": labels}).encode())
    assert producer.flush(30) == 0
    route = {"input": src, "output": out, "dlq": dlq, "label_set": "support", "threshold": 0.0}
    worker = KafkaWorker(kafka_runtime, worker_config(kafka, group_id, [route]))
    errors: list[BaseException] = []
    stop = threading.Event()
    held: list[int] = []

    def read_snapshots() -> None:  # as the HTTP console does, on its own thread, while the loop writes
        while not stop.is_set():
            try:
                snap = worker.stats()
                dict(snap.predicted_labels.get(src, {}))
                if worker._loop is not None:
                    held.append(worker._loop.stats.held_keys())
            except BaseException as exc:
                errors.append(exc)
                return

    reader = threading.Thread(target=read_snapshots)
    worker.start()
    reader.start()
    try:
        kafka.read_all([out], EVENTS, timeout=240)
        deadline = time.monotonic() + 30
        while worker.stats().scored < EVENTS:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        reader.join()
        worker.stop(10)
    assert not errors, errors
    counts = worker.stats().predicted_labels[src]
    assert len(counts) <= TOP_LABELS + 1 and OTHER in counts
    assert sum(counts.values()) == EVENTS * LABELS_PER_EVENT, "the total is exact: the rest is in OTHER"
    # What the counters hold never grew with the labels seen: at most 2 * TOP_LABELS per route.
    assert held and max(held) <= 2 * TOP_LABELS + 1 + 2 * TOP_REASONS


@settings(derandomize=True, database=None, max_examples=100, deadline=None)
@given(keys=st.lists(st.text(max_size=8), max_size=400), keep=st.integers(1, 10))
def test_a_top_counter_is_bounded_and_its_total_exact(keys: list[str], keep: int) -> None:
    counter = TopCounter(keep)
    for key in keys:
        counter.add(key)
        assert len(counter) <= 2 * keep
    top = counter.top()
    assert sum(top.values()) == len(keys)
    assert len(top) <= keep + 1
    named = [n for k, n in top.items() if k != OTHER]
    assert named == sorted(named, reverse=True)


def test_routes_beyond_the_bound_are_counted_under_other() -> None:
    stats = WorkerStats()
    for route in range(MAX_ROUTES + 10):
        stats.count_labels(f"route-{route}", ["a", "b"])
    labels = stats.snapshot().predicted_labels
    assert len(labels) == MAX_ROUTES + 1 and labels[OTHER] == {"a": 10, "b": 10}
