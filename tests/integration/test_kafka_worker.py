"""The Kafka worker in-process, on a real broker and the real builtin model."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict

import pytest
from fixtures.kafka import LABEL_SETS, worker_config

from worker.app import KafkaWorker
from worker.codec import header_map

SHORT = ["card charged twice", "app crashes", "add dark mode", "great match", "new election", "fast chip"]

# (value, expected error.reason): bad events the worker must dead-letter and keep going.
BAD = [
    (b"\xff\xfe\xfa", "undecodable"),
    (b'{"text": "unterminated', "invalid_json"),
    (b'{"id": "no-text"}', "missing_text"),
    (b'{"text": "  "}', "empty_text"),
    (b'{"text": "x", "label_set": "no-such-set"}', "unknown_label_set"),
    (json.dumps({"text": "long " * 60}).encode(), "text_too_long"),
]


def produce_events(kafka, topic, n, partitions=3, bad_every=0, start=0):
    """Produce n events round-robin over partitions; every `bad_every`-th is a bad one. Return specs."""
    producer = kafka.producer()
    specs = []
    for i in range(start, start + n):
        part = i % partitions
        if bad_every and i % bad_every == bad_every - 1:
            value, reason = BAD[(i // bad_every) % len(BAD)]
        elif i % 4 == 0:
            value, reason = f"{SHORT[i % len(SHORT)]} {i}".encode(), None  # a plain-text event
        else:
            value, reason = json.dumps({"id": f"{topic}-{i}", "text": f"{SHORT[i % len(SHORT)]} {i}"}), None
            value = value.encode()
        producer.produce(
            topic, value=value, key=f"k{i}".encode(), partition=part, headers=[("trace", b"t%d" % i)]
        )
        specs.append((part, value, reason, f"k{i}"))
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return specs


def source_of(msg):
    """(partition, offset) of the input behind an output or dead-letter record."""
    h = header_map(msg.headers())
    if "error.reason" in h:
        return int(h["source.partition"]), int(h["source.offset"])
    src = json.loads(msg.value())["source"]
    return src["partition"], src["offset"]


def scored(records):
    """(source topic, partition, offset) -> list of decoded outputs."""
    out = defaultdict(list)
    for m in records:
        body = json.loads(m.value())
        src = body["source"]
        out[(src["topic"], src["partition"], src["offset"])].append((m, body))
    return out


@pytest.fixture
def run_worker(kafka_runtime):
    workers = []

    def start(app_config):
        worker = KafkaWorker(kafka_runtime, app_config)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    stoppers = [threading.Thread(target=w.stop, args=(20,)) for w in workers]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()


def test_two_routes_5000_events_scored_once_in_order_with_dead_letters(
    kafka, topic_name, group_id, run_worker
):
    tickets, news = topic_name("tickets"), topic_name("news")
    outs = {tickets: topic_name("tickets-out"), news: topic_name("news-out")}
    dlqs = {tickets: topic_name("tickets-dlq"), news: topic_name("news-dlq")}
    kafka.create_topics({t: 3 for t in [tickets, news, *outs.values(), *dlqs.values()]})
    routes = [
        {
            "input": t,
            "output": outs[t],
            "dlq": dlqs[t],
            "label_set": s,
            "max_text_chars": 200,
            "over_length": "reject",
        }
        for t, s in ((tickets, "support"), (news, "topics"))
    ]
    specs = {
        tickets: produce_events(kafka, tickets, 2500, bad_every=50),
        news: produce_events(kafka, news, 2500),
    }
    worker = run_worker(worker_config(kafka, group_id, routes))
    good = sum(1 for s in specs.values() for _, _, reason, _ in s if reason is None)
    bad = sum(1 for s in specs.values() for _, _, reason, _ in s if reason is not None)
    assert bad == 50

    outputs = kafka.read_all(list(outs.values()), good, timeout=200)
    dead = kafka.read_all(list(dlqs.values()), bad, timeout=30)

    by_source = scored(outputs)
    assert len(outputs) == good, "every event scored once (no duplicates without faults)"
    assert all(len(v) == 1 for v in by_source.values())
    for topic, label_set in ((tickets, "support"), (news, "topics")):
        offsets = defaultdict(int)
        for part, value, reason, key in specs[topic]:
            offset = offsets[part]
            offsets[part] += 1
            if reason is not None:
                continue
            [(msg, body)] = by_source[(topic, part, offset)]
            assert msg.topic() == outs[topic] and msg.partition() == part
            assert msg.key() == key.encode() and header_map(msg.headers())["trace"].startswith("t")
            assert body["label_set"] == label_set
            assert list(body["scores"]) == list(LABEL_SETS[label_set]["labels"])
            assert all(0.0 <= s <= 1.0 for s in body["scores"].values())
            if value.startswith(b"{"):
                assert body["id"] == json.loads(value)["id"]
            else:
                assert body["id"] == key  # a plain-text event takes the record key as its id
    # Per partition, outputs appear in input order.
    for out_topic in outs.values():
        seen = defaultdict(list)
        for m in sorted(
            (m for m in outputs if m.topic() == out_topic), key=lambda m: (m.partition(), m.offset())
        ):
            seen[m.partition()].append(json.loads(m.value())["source"]["offset"])
        assert all(v == sorted(v) for v in seen.values()) and len(seen) == 3

    assert len(dead) == bad
    reasons = Counter()
    for m in dead:
        h = header_map(m.headers())
        assert m.topic() == dlqs[h["source.topic"]]
        part, value, reason, _ = next(s for s in specs[h["source.topic"]] if s[3] == m.key().decode())
        assert (h["error.reason"], int(h["source.partition"]), m.value()) == (reason, part, value)
        assert h["error.message"] and int(h["source.offset"]) >= 0 and h["trace"].startswith("t")
        reasons[reason] += 1
    assert set(reasons) == {r for _, r in BAD}
    assert worker.stats().dead_lettered == bad and worker.running


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_two_workers_split_partitions_and_score_everything(kafka, topic_name, group_id, run_worker):
    src, out = topic_name("split-in"), topic_name("split-out")
    kafka.create_topics({src: 6, out: 6})
    routes = [{"input": src, "output": out, "label_set": "support"}]
    produce_events(kafka, src, 600, partitions=6)  # enough that the first is busy when the second joins
    # revoke_grace_ms=0: a revoked partition's unfinished work is given up at once (re-read by
    # the new owner), so the revoke below really happens with work in flight.
    first = run_worker(
        worker_config(kafka, group_id, routes, batch_size=16, instance_id="w1", revoke_grace_ms=1)
    )
    wait_for(lambda: first.stats().consumed > 0)
    # The second member joins while the first is mid-stream: a revoke with work in flight.
    second = run_worker(worker_config(kafka, group_id, routes, batch_size=16, instance_id="w2"))
    wait_for(lambda: first.assignment() and second.assignment())
    produce_events(kafka, src, 300, partitions=6, start=600)
    outputs = kafka.read_all([out], 900, timeout=180)
    sources = Counter(source_of(m) for m in outputs)
    assert len(sources) == 900, "none lost"
    revoked = first.stats()
    assert revoked.revokes >= 1 and revoked.revoked_unacked > 0, "a revoke with work in flight happened"
    # Only what a revoked partition still had unacknowledged is read (and written) again.
    duplicates = sum(sources.values()) - 900
    assert duplicates <= revoked.revoked_unacked + second.stats().revoked_unacked
    assert first.stats().scored > 0 and second.stats().scored > 0, "both members did work"
    assert not set(first.assignment()) & set(second.assignment())
    assert len(first.assignment()) + len(second.assignment()) == 6


def test_backpressure_pauses_and_resumes_without_loss(kafka, topic_name, group_id, run_worker):
    src, out = topic_name("bp-in"), topic_name("bp-out")
    kafka.create_topics({src: 3, out: 3})
    produce_events(kafka, src, 400)
    worker = run_worker(
        worker_config(
            kafka, group_id, [{"input": src, "output": out, "label_set": "support"}], max_in_flight=24
        )
    )
    outputs = kafka.read_all([out], 400, timeout=120)
    assert len(scored(outputs)) == 400
    assert worker.stats().pauses > 0


def test_reload_swaps_label_sets_and_routes_without_dropping_work(kafka, topic_name, group_id, run_worker):
    src, out, src2, out2 = (
        topic_name("rl-in"),
        topic_name("rl-out"),
        topic_name("rl-in2"),
        topic_name("rl-out2"),
    )
    kafka.create_topics({src: 3, out: 3, src2: 3, out2: 3})
    route = {"input": src, "output": out, "label_set": "support"}
    worker = run_worker(worker_config(kafka, group_id, [route]))
    produce_events(kafka, src, 150)
    reloaded = worker_config(
        kafka,
        group_id,
        [{**route, "label_set": "topics"}, {"input": src2, "output": out2, "labels": ["a", "b"]}],
    )
    worker.reload(reloaded)  # while the first 150 may still be in flight
    produce_events(kafka, src, 150, start=150)
    produce_events(kafka, src2, 30)
    outputs = scored(kafka.read_all([out], 300, timeout=120))
    assert len(outputs) == 300
    # reload() returns once the loop uses the new routes: everything produced after it is "topics"
    # (offsets 50..99 of each partition); earlier events keep whichever set they were read with.
    after = {body["label_set"] for (_, _, offset), [(_, body)] in outputs.items() if offset >= 50}
    assert after == {"topics"}
    extra = kafka.read_all([out2], 30, timeout=60)
    assert len(extra) == 30 and all(list(json.loads(m.value())["scores"]) == ["a", "b"] for m in extra)


def test_exactly_once_read_committed_sees_each_event_once(kafka, topic_name, group_id, run_worker):
    src, out, dlq = topic_name("eos-in"), topic_name("eos-out"), topic_name("eos-dlq")
    kafka.create_topics({src: 3, out: 3, dlq: 3})
    produce_events(kafka, src, 600, bad_every=100)
    worker = run_worker(
        worker_config(
            kafka,
            group_id,
            [{"input": src, "output": out, "dlq": dlq, "label_set": "support"}],
            delivery="exactly-once",
            instance_id="eos-1",
            commit_interval_ms=100,
        )
    )
    outputs = kafka.read_all([out, dlq], 600, timeout=120, **{"isolation.level": "read_committed"})
    sources = Counter(source_of(m) for m in outputs)
    assert len(outputs) == 600 and len(sources) == 600
    assert worker.stats().transactions > 0 and worker.stats().aborts == 0
