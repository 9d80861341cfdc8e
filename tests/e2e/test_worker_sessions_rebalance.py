"""Kafka sessions across rebalances: two real `gliclass-stream worker` processes, one conversation per key.

Worker A alone scores the first messages of eight conversations spread over four partitions; worker
B joins (half the partitions move to it mid-conversation); more messages arrive; A is SIGKILLed
with scored-but-uncommitted records (B re-reads them); the last messages arrive. Every output, the
re-read duplicates included, must equal what one uninterrupted session per key gives (a
`SessionStore` on the same checkpoint fed the same texts in order; scores within 1e-5), and none is
lost. Without the look-back rebuild, B's first output of each conversation it took over would have
fewer cached tokens and other scores.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from fixtures import decoder_kv as dk
from fixtures import reference
from fixtures.kafka_sessions import LABELS, assert_output_matches, event, oracle, place, text_of
from test_worker_cli import Reader, Worker

pytestmark = pytest.mark.reference

PARTITIONS = 4
KEYS = [f"conv-{k}" for k in range(8)]  # conversation k lives on partition k % PARTITIONS
PHASES = [(0, 3), (3, 6), (6, 8)]  # message indexes of each conversation sent in each phase
PER_KEY = PHASES[-1][1]
STRATEGY = "every_n_tokens:10"


def write_config(
    path: Path, kafka, group_id: str, checkpoint: Path, src: str, out: str, commit_ms: int
) -> Path:
    path.write_text(
        f"""
[model]
id = "{checkpoint}"
device = "cpu"

[kafka]
bootstrap_servers = "{kafka.bootstrap_servers}"
group_id = "{group_id}"
commit_interval_ms = {commit_ms}

[kafka.consumer]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500

[[kafka.routes]]
input = "{src}"
output = "{out}"
labels = {json.dumps(LABELS)}
session = "key"
strategy = "{STRATEGY}"
emit = "every"
"""
    )
    return path


def produce_phase(kafka, topic: str, conversations: dict[str, list[str]], phase: int) -> None:
    producer = kafka.producer()
    first, end = PHASES[phase]
    for i in range(first, end):
        for k, key in enumerate(KEYS):
            producer.produce(
                topic, event(key, i, conversations[key][i]), key=key.encode(), partition=k % PARTITIONS
            )
    assert producer.flush(30) == 0


def distinct(records) -> set[tuple[int, int]]:
    return {
        (b["source"]["partition"], b["source"]["offset"]) for b in (json.loads(m.value()) for m in records)
    }


@pytest.mark.timeout(300)
def test_rebalance_mid_conversation_every_output_equals_one_uninterrupted_session(
    kafka, topic_name, group_id, tmp_path
):
    if not reference.available():
        pytest.skip("the reference gliclass package is not installed")
    from gliclass_core import Classifier

    checkpoint = dk.build(tmp_path / "qwen3")
    src, out = topic_name("sess-in"), topic_name("sess-out")
    kafka.create_topics({src: PARTITIONS, out: PARTITIONS, f"{src}.dlq": PARTITIONS})
    conversations = {key: [text_of(k, i) for i in range(PER_KEY)] for k, key in enumerate(KEYS)}
    expected = oracle(Classifier.from_pretrained(str(checkpoint), device="cpu"), conversations, STRATEGY)
    # A commits only on revoke, so that its kill leaves its phase-2 records uncommitted: B scores
    # them again, on conversations it rebuilt.
    config_a = write_config(tmp_path / "a.toml", kafka, group_id, checkpoint, src, out, commit_ms=60000)
    config_b = write_config(tmp_path / "b.toml", kafka, group_id, checkpoint, src, out, commit_ms=200)
    reader = Reader(kafka, out, PARTITIONS)
    workers: list[Worker] = []
    try:
        produce_phase(kafka, src, conversations, 0)
        a = Worker(config_a, tmp_path / "a.log")
        workers.append(a)
        per_phase = len(KEYS) * (PHASES[0][1] - PHASES[0][0])
        reader.until(lambda r: len(distinct(r)) >= per_phase, timeout=120)

        b = Worker(config_b, tmp_path / "b.log")  # joins: half the partitions move to it
        workers.append(b)
        b.wait_log("assigned [('", timeout=120)
        produce_phase(kafka, src, conversations, 1)
        reader.until(lambda r: len(distinct(r)) >= len(KEYS) * PHASES[1][1], timeout=120)

        a.proc.kill()  # its partitions go to B, which re-reads what A had not committed
        a.proc.wait(10)
        produce_phase(kafka, src, conversations, 2)
        total = len(KEYS) * PER_KEY
        reader.until(lambda r: len(distinct(r)) >= total, timeout=120)
        records = reader.settle(2.0)

        bodies = [json.loads(m.value()) for m in records]
        assert distinct(records) == {(p, o) for p in range(PARTITIONS) for o in range(total // PARTITIONS)}, (
            "none lost"
        )
        for body in bodies:
            assert body["session"]["id"] == place(body)[0]
            assert_output_matches(body, expected[place(body)])
        rebuilt = [b for b in bodies if b["session"]["rebuilt"]]
        assert rebuilt, "conversations were taken over mid-way and rebuilt"
        assert all(place(b)[1] > 0 for b in rebuilt)
        copies = Counter((b["source"]["partition"], b["source"]["offset"]) for b in bodies)
        duplicates = sum(n - 1 for n in copies.values())
        assert duplicates > 0, "A's uncommitted records were scored again by B"
        print(
            f"sessions across rebalances: {len(rebuilt)} rebuilt outputs, {duplicates} identical duplicates"
        )
        assert b.terminate() == 0
    finally:
        reader.close()
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
