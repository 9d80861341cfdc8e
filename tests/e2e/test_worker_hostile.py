"""`gliclass-stream worker` under hostile input: a real broker, the real process, the builtin model.

The hostile corpus (tests/fixtures/hostile.py: deep nesting, huge and non-finite numbers, lone
surrogates, NUL and zero-width texts, wrong types in every field, 20,000 labels, tombstones,
arbitrary and oversized bytes, hostile keys and headers) is interleaved with good events over three
partitions. At the end the process is still alive, every good event is scored on the output topic,
every bad record is in the DLQ with its reason, and SIGTERM still exits 0.
"""

from __future__ import annotations

import json
import time

from fixtures.hostile import CORPUS
from test_worker_cli import Reader, Worker, write_config

from worker.codec import header_map

GOOD = ["card charged twice", "app crashes on start", "please add dark mode", "refund my order"]

# Records whose key or headers are the hostile part: (name, value, key, headers, reason).
ODD_RECORDS = [
    ("binary key, null header", b"refund my order", b"\x00\xff\xfe", [("h", None), ("", b"")], None),
    ("empty key", b'{"text": "card charged twice"}', b"", [("\u00e9\u00e8", b"\xff")], None),
    ("huge headers", b'{"text": "hello"}', b"k", [("h", b"x" * 600_000)], "too_large"),
    ("just under the producer limit", b"x" * 990_000, b"k", [], "too_large"),
]


def test_hostile_records_are_dead_lettered_and_the_worker_keeps_going(
    kafka, topic_name, group_id, tmp_path, gliclass_cache
):
    src, out = topic_name("hostile-in"), topic_name("hostile-out")
    dlq = f"{src}.dlq"
    kafka.create_topics({src: 3, out: 3, dlq: 3})
    config = write_config(tmp_path / "worker.toml", kafka, group_id, src, out, "support")
    # Bytes up to what the broker takes: the test producer allows records above librdkafka's default.
    producer = kafka.producer(**{"message.max.bytes": 2_000_000})
    expected: dict[str, str | None] = {}  # id or dlq marker -> reason (None: scored)
    n = 0

    def send(value, reason, key=None, headers=None, name=""):
        nonlocal n
        marker = f"m{n}"
        headers = [*(headers or []), ("test.marker", marker.encode())]
        producer.produce(src, value=value, key=key, headers=headers, partition=n % 3)
        expected[marker] = reason
        n += 1
        return marker

    names: dict[str, str] = {}
    for i, (name, value, reason) in enumerate(CORPUS):
        names[send(value, reason, key=f"bad{i}".encode())] = name
        good = json.dumps({"id": f"g{i}", "text": f"{GOOD[i % len(GOOD)]} {i}"}).encode()
        names[send(good, None, key=f"good{i}".encode())] = f"good {i}"
    for name, value, key, headers, reason in ODD_RECORDS:
        names[send(value, reason, key=key, headers=headers)] = name
        producer.poll(0)
    assert producer.flush(60) == 0
    total = len(expected)

    out_reader, dlq_reader = Reader(kafka, out, 3), Reader(kafka, dlq, 3)
    worker = Worker(config, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 240
        while len(out_reader.poll()) + len(dlq_reader.poll()) < total:
            assert worker.proc.poll() is None, f"worker died:\n{worker.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"{len(out_reader.records)} outputs + {len(dlq_reader.records)} dead letters of {total}"
            )
        out_reader.settle(1.0)
        dlq_reader.settle(1.0)
        assert worker.proc.poll() is None, "the worker is still running after the hostile corpus"

        got: dict[str, str | None] = {}
        for m in out_reader.records:
            marker = header_map(m.headers())["test.marker"]
            body = json.loads(m.value())
            assert set(body["scores"]) and body["model"] == "builtin:minilm"
            got[marker] = None
        for m in dlq_reader.records:
            h = header_map(m.headers())
            # A dead letter whose headers had to be dropped to fit is known by its source offset.
            marker = h.get("test.marker") or f"dropped@{h['source.partition']}:{h['source.offset']}"
            got[marker] = h["error.reason"]
            assert h["error.message"] and h["source.topic"] == src
        dropped = [k for k in got if k.startswith("dropped@")]
        assert len(dropped) <= 1  # only the record with 600 KB of headers loses them
        for k in dropped:
            got[next(m for m, name in names.items() if name == "huge headers")] = got.pop(k)
        mismatches = {
            names[k]: (want, got.get(k, "missing"))
            for k, want in expected.items()
            if got.get(k, "missing") != want
        }
        assert not mismatches, mismatches
        assert len(out_reader.records) + len(dlq_reader.records) == total, "one record each, no duplicates"
        cut = [m for m in dlq_reader.records if "error.value_bytes" in header_map(m.headers())]
        assert cut and all(len(m.value() or b"") < 1_000_000 for m in cut)
        assert "Traceback" not in worker.log.read_text()
        assert worker.terminate() == 0
    finally:
        out_reader.close()
        dlq_reader.close()
        if worker.proc.poll() is None:
            worker.proc.kill()
