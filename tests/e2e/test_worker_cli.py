"""`gliclass-stream worker` as a user runs it: kill -9 and restart, SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from worker.codec import header_map

TEXTS = ["card charged twice", "app crashes on start", "please add dark mode", "refund my order"]


def cli() -> list[str]:
    script = Path(sys.executable).parent / "gliclass-stream"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.app.cli"]


def write_config(path: Path, kafka, group_id: str, src: str, out: str, label_set: str, **kafka_keys) -> Path:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in kafka_keys.items())
    path.write_text(
        f"""
[model]
id = "builtin:minilm"
device = "cpu"

[label_sets.support]
labels = ["billing", "bug report", "feature request"]

[label_sets.mood]
labels = ["happy", "angry"]

[kafka]
bootstrap_servers = "{kafka.bootstrap_servers}"
group_id = "{group_id}"
batch_size = 64
{extra}
[kafka.consumer]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500

[[kafka.routes]]
input = "{src}"
output = "{out}"
label_set = "{label_set}"
"""
    )
    return path


class Worker:
    """A `gliclass-stream worker` subprocess with its stderr in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [*cli(), "worker", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait_log(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, f"worker exited early:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{text!r} not logged:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


class Reader:
    """Keeps reading a topic from the start; `records` grows as outputs arrive."""

    def __init__(self, kafka, topic: str, partitions: int, **settings) -> None:
        from confluent_kafka import TopicPartition

        self.consumer = kafka.consumer(**settings)
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.records: list = []

    def until(self, predicate, timeout: float = 120.0) -> list:
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            assert time.monotonic() < deadline, f"only {len(self.records)} outputs arrived"
            self.records += [m for m in self.consumer.consume(500, 0.2) if m.error() is None]
        return self.records

    def poll(self) -> list:
        """Read what is there now (one short poll); return all records so far."""
        self.records += [m for m in self.consumer.consume(500, 0.2) if m.error() is None]
        return self.records

    def settle(self, quiet: float = 2.0) -> list:
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            new = [m for m in self.consumer.consume(500, 0.2) if m.error() is None]
            if new:
                self.records += new
                last = time.monotonic()
        return self.records

    def close(self) -> None:
        self.consumer.close()


def produce(kafka, topic: str, n: int, start: int = 0, partitions: int = 3) -> None:
    producer = kafka.producer()
    for i in range(start, start + n):
        value = json.dumps({"id": str(i), "text": f"{TEXTS[i % len(TEXTS)]} {i}"}).encode()
        producer.produce(topic, value=value, key=f"k{i}".encode(), partition=i % partitions)
    assert producer.flush(30) == 0


def sources(records) -> Counter:
    return Counter(
        (b["source"]["partition"], b["source"]["offset"]) for b in (json.loads(m.value()) for m in records)
    )


@pytest.fixture
def e2e_topics(kafka, topic_name, group_id):
    src, out = topic_name("e2e-in"), topic_name("e2e-out")
    kafka.create_topics({src: 3, out: 3, f"{src}.dlq": 3})
    return src, out


def test_kill_9_restart_loses_nothing_then_sighup_reload_and_sigterm_exit_0(
    kafka, e2e_topics, group_id, tmp_path, gliclass_cache
):
    src, out = e2e_topics
    # Commits every 2 s, so the kill lands with scored-but-uncommitted events (they are re-scored).
    slow = {"commit_interval_ms": 2000}
    config = write_config(tmp_path / "worker.toml", kafka, group_id, src, out, "support", **slow)
    # The first 90 events go in before the first worker starts, the other 360 only after it is
    # killed: however fast the worker scores, the kill lands mid-stream (a faster host path once
    # scored all 450 before a kill timed on the output count).
    produce(kafka, src, 90)
    reader = Reader(kafka, out, 3)
    workers: list[Worker] = []
    try:
        first = Worker(config, tmp_path / "first.log")
        workers.append(first)
        reader.until(lambda r: len(r) >= 30)
        first.proc.kill()  # kill -9 mid-stream: in-flight and uncommitted work is lost with it
        first.proc.wait(10)
        produce(kafka, src, 360, start=90)
        assert len(sources(reader.records)) < 450, "the kill happened mid-stream"

        second = Worker(config, tmp_path / "second.log")
        workers.append(second)
        reader.until(lambda r: len(sources(r)) >= 450, timeout=180)
        counts = sources(reader.settle())
        assert set(counts) == {(p, o) for p in range(3) for o in range(150)}, "every input has an output"
        print(f"kill -9 + restart: {sum(counts.values()) - 450} duplicates of 450 (at-least-once)")

        # SIGHUP: the route now uses another label set; no restart.
        write_config(config, kafka, group_id, src, out, "mood", **slow)
        second.proc.send_signal(signal.SIGHUP)
        second.wait_log("reloaded routes and label sets")
        produce(kafka, src, 15, start=450)
        fresh = reader.until(lambda r: len(sources(r)) >= 465)
        bodies = [json.loads(m.value()) for m in fresh]
        new = [b for b in bodies if int(b["id"]) >= 450]
        assert {b["label_set"] for b in new} == {"mood"} and len(new) == 15

        assert second.terminate() == 0
        assert "stopped" in second.log.read_text()
    finally:
        reader.close()
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()


def test_exactly_once_across_kill_9(kafka, e2e_topics, group_id, tmp_path, gliclass_cache):
    src, out = e2e_topics
    config = write_config(
        tmp_path / "eos.toml",
        kafka,
        group_id,
        src,
        out,
        "support",
        delivery="exactly-once",
        instance_id="e2e-eos",
        # Long transactions, so the kill can land inside an open one with records in it.
        commit_interval_ms=3000,
    )
    # 90 events first; the other 360 once some output is committed, so that a fast worker cannot
    # score all 450 in its first transaction and leave no mid-stream moment to kill it in.
    produce(kafka, src, 90)
    reader = Reader(kafka, out, 3, **{"isolation.level": "read_committed"})
    # Sees records of open transactions too: tells us when a transaction holds uncommitted output.
    peek = Reader(kafka, out, 3, **{"isolation.level": "read_uncommitted"})
    workers: list[Worker] = []
    try:
        workers.append(Worker(config, tmp_path / "eos-first.log"))
        # Kill inside an open transaction that already holds records, after one commit.
        deadline = time.monotonic() + 120

        def open_transaction_with_records() -> bool:
            # Asked twice: records seen uncommitted, and still not committed a moment later.
            return (
                bool(reader.poll())
                and len(peek.poll()) > len(reader.poll()) > 0
                and (len(peek.records) > len(reader.poll()))
            )

        # Prefer a kill inside an open transaction; a window may not be caught (a fast worker, or a
        # slow machine), so 2 s after the first committed output (and the rest of the input) any
        # mid-stream moment will do.
        first_output = None
        while not open_transaction_with_records():
            done = len(sources(reader.poll()))
            if done and first_output is None:
                first_output = time.monotonic()
                produce(kafka, src, 360, start=90)
            if first_output is not None and time.monotonic() > first_output + 2 and 0 < done < 400:
                break
            assert done < 400, f"the worker finished ({done} outputs) before a kill point was caught"
            assert time.monotonic() < deadline + 120, "the worker committed no output"
        if first_output is None:  # the window came with the first output: the rest still goes in
            produce(kafka, src, 360, start=90)
        workers[0].proc.kill()
        workers[0].proc.wait(10)
        assert len(sources(reader.poll())) < 450, "the kill happened mid-stream"
        # Same transactional id: the restart fences the killed instance and aborts its open transaction.
        workers.append(Worker(config, tmp_path / "eos-second.log"))
        reader.until(lambda r: len(sources(r)) >= 450, timeout=180)
        records = reader.settle()
        counts = sources(records)
        assert set(counts) == {(p, o) for p in range(3) for o in range(150)}, "every input has an output"
        duplicates = {k for k, c in counts.items() if c > 1}
        if kafka.external:
            assert not duplicates, "read_committed must see each event exactly once"
        else:
            # tansu 0.6 does not send aborted-transaction ranges in Fetch, so read_committed
            # consumers also see records of aborted transactions. Every duplicate must then come
            # from the ONE transaction the kill left open: no committed transaction repeats work.
            txn = [header_map(m.headers()).get("gliclass.txn") for m in records]
            first_copy: dict = {}
            aborted = set()
            for m, t in zip(records, txn):
                key = (
                    json.loads(m.value())["source"]["partition"],
                    json.loads(m.value())["source"]["offset"],
                )
                if key in duplicates:
                    if key in first_copy:
                        aborted.add(first_copy[key])
                    else:
                        first_copy[key] = t
            assert len(aborted) <= 1, aborted
            if aborted:  # ... and it is the killed run's last transaction
                instance, seq = next(iter(aborted)).rsplit("-", 1)
                run_seqs = [int(t.rsplit("-", 1)[1]) for t in txn if t and t.startswith(instance + "-")]
                assert int(seq) == max(run_seqs)
        per_run = Counter(header_map(m.headers()).get("gliclass.txn", "?").rsplit("-", 1)[0] for m in records)
        print(
            f"exactly-once + kill -9: {len(records)} records read_committed, {len(duplicates)} duplicates "
            f"(broker external={kafka.external}); records per worker run: {sorted(per_run.values())}"
        )
        assert workers[1].terminate() == 0
    finally:
        reader.close()
        peek.close()
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
