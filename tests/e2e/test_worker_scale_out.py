"""Scale-out: several `gliclass-stream worker` processes in one consumer group on the real broker.

Two workers share six partitions, a third joins mid-stream, then one is SIGKILLed: every input is
scored, none is lost, and the duplicates are bounded: in at-least-once mode by what the killed
worker had consumed but not committed (at most its `max_in_flight` unacknowledged records plus
what was acknowledged since its last commit); in exactly-once mode a read_committed reader on
Apache Kafka sees none (tansu 0.6 does not hide aborted transactions, so records of transactions
that were written again later are left out, as benchmarks/kafka_soak.py counts them). In
exactly-once mode the killed worker is replaced by one with its instance id, which aborts its open
transaction: tansu does not time out a dead producer's transaction, which would otherwise hold back
read_committed readers for good.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest
from test_worker_cli import Reader, Worker, produce, write_config

from worker.codec import header_map

PARTITIONS = 6
EVENTS = 240
MAX_IN_FLIGHT = 48


def source_and_txn(m) -> tuple[tuple[int, int], str | None]:
    body = json.loads(m.value())
    return (body["source"]["partition"], body["source"]["offset"]), header_map(m.headers()).get(
        "gliclass.txn"
    )


def read_committed_duplicates(records) -> int:
    """Duplicates a read_committed reader on Apache Kafka would see (aborted transactions hidden):
    a transaction all of whose records were written again by later ones was aborted."""
    by_txn: dict[str | None, set] = defaultdict(set)
    first_seen: dict[str | None, int] = {}
    for i, m in enumerate(records):
        src, txn = source_and_txn(m)
        by_txn[txn].add(src)
        first_seen.setdefault(txn, i)
    later: set = set()
    aborted = set()
    for txn in sorted(by_txn, key=first_seen.__getitem__, reverse=True):
        if txn is not None and by_txn[txn] <= later:
            aborted.add(txn)
        later |= by_txn[txn]
    kept = Counter(src for m in records for src, txn in [source_and_txn(m)] if txn not in aborted)
    return sum(c - 1 for c in kept.values())


@pytest.mark.timeout(540)  # three model-loading processes on a small CI machine
@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_two_then_three_workers_one_killed_every_input_scored(
    kafka, topic_name, group_id, tmp_path, gliclass_cache, delivery
):
    src, out = topic_name("scale-in"), topic_name("scale-out")
    kafka.create_topics({src: PARTITIONS, out: PARTITIONS, f"{src}.dlq": PARTITIONS})

    def config(name: str):
        keys = {"max_in_flight": MAX_IN_FLIGHT, "delivery": delivery, "instance_id": f"scale-{name}"}
        return write_config(tmp_path / f"{name}.toml", kafka, group_id, src, out, "support", **keys)

    settings = {"isolation.level": "read_committed"} if delivery == "exactly-once" else {}
    reader = Reader(kafka, out, PARTITIONS, **settings)
    workers: dict[str, Worker] = {}
    try:
        for name in ("a", "b"):
            workers[name] = Worker(config(name), tmp_path / f"{name}.log")
        produce(kafka, src, EVENTS // 2, partitions=PARTITIONS)
        reader.until(lambda r: len(r) >= 20, timeout=180)
        workers["c"] = Worker(config("c"), tmp_path / "c.log")  # a third member joins mid-stream
        workers["c"].wait_log("assigned", timeout=180)
        produce(kafka, src, EVENTS // 2, start=EVENTS // 2, partitions=PARTITIONS)
        reader.until(lambda r: len(r) >= EVENTS // 2 + 20, timeout=180)
        workers["a"].proc.kill()  # SIGKILL mid-stream: its uncommitted work is re-read by the others
        workers["a"].proc.wait(10)
        assert len({source_and_txn(m)[0] for m in reader.records}) < EVENTS, "the kill happened mid-stream"
        if delivery == "exactly-once":
            # A killed member's open transaction holds back read_committed readers of the partitions it
            # wrote to until it is aborted: by the transaction timeout on Kafka, which the embedded
            # broker does not enforce. A replacement with the same instance id fences and aborts it at
            # start, as a restarted pod does.
            workers["a2"] = Worker(config("a"), tmp_path / "a2.log")
        reader.until(lambda r: len({source_and_txn(m)[0] for m in r}) >= EVENTS, timeout=300)
        records = reader.settle(3.0)
        counts = Counter(source_and_txn(m)[0] for m in records)
        per_partition = EVENTS // PARTITIONS
        assert set(counts) == {(p, o) for p in range(PARTITIONS) for o in range(per_partition)}, "none lost"
        raw = sum(counts.values()) - EVENTS
        if delivery == "exactly-once":
            assert read_committed_duplicates(records) == 0
        else:
            # What the killed worker consumed and had not committed: at most MAX_IN_FLIGHT
            # unacknowledged, plus what was acknowledged since its last commit (200 ms).
            assert raw <= 2 * MAX_IN_FLIGHT, f"{raw} duplicates"
        print(f"scale-out {delivery}: {raw} raw duplicates of {EVENTS}")
        for name in ("b", "c", "a2"):
            if name in workers:
                assert workers[name].terminate() == 0
    finally:
        reader.close()
        for w in workers.values():
            if w.proc.poll() is None:
                w.proc.kill()
