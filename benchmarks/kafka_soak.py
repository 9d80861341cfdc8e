"""Soak: minutes of traffic through the real broker and the real `gliclass-stream worker` process.

90% good events and 10% hostile records (`HOSTILE`, easy to extend) go in at a steady rate; the
broker is frozen (SIGSTOP) for a while and the worker is killed (SIGKILL) once mid-stream and
started again. At the end it prints events in, outputs, dead letters by reason, lost (must be 0),
duplicates, worker restarts (only the one it caused) and the worker's RSS over time.

    python benchmarks/kafka_soak.py --duration 180 --rate 15
    python benchmarks/kafka_soak.py --duration 180 --rate 15 --delivery exactly-once
    python benchmarks/kafka_soak.py --scale-out --duration 60 --rate 8 --partitions 6

With `--scale-out` the run starts one worker, a second and a third join (at 20% and 40% of the
run) and the first is SIGKILLed and not restarted (at 60%); every `--oversized-every`-th event
carries a big header and 100 long labels, so its output is larger than the producer's
`message.max.bytes` (a permanent, record-level delivery error: dead-lettered as
`delivery_failed`), and every 5th good event brings 10 labels never seen before.

Every input carries a `soak.seq` header, which the worker carries through to its output or dead
letter, so each record is matched to what became of it. Exactly-once: tansu (the embedded broker)
does not hide aborted transactions from read_committed readers, so duplicates are counted the way
a read_committed reader on Apache Kafka would see them: a transaction whose every record was
written again later (by a later transaction, after a rewind) was aborted and is hidden; any other
repeated record is a duplicate.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from machine import print_machine  # benchmarks/machine.py: the machine line

from worker.broker import EmbeddedBroker, create_topics
from worker.codec import header_map, record_headers

TEXTS = [
    "I was charged twice for my subscription this month",
    "the app crashes every time I open the settings page",
    "please add a dark mode to the mobile app",
    "refund my order, it never arrived",
    "login fails with an error after the last update",
    "it would be great to export reports as CSV",
]

# Hostile records the codec dead-letters: (name, value). Extend freely; each is sent in turn.
# (A top-level JSON array is not here: a value not starting with "{" is plain text, and scored.)
HOSTILE: list[tuple[str, bytes | None]] = [
    ("invalid utf-8", b"\xff\xfe\xfa\x80"),
    ("truncated json", b'{"id": "x", "text": "unterminated'),
    ("tombstone", None),
    ("empty value", b""),
    ("empty text", b'{"text": ""}'),
    ("blank text", b'{"text": " \\t\\n "}'),
    ("text is a number", b'{"text": 42}'),
    ("text is null", b'{"text": null}'),
    ("nested arrays as text (50 deep)", b'{"text": ' + b"[" * 50 + b"]" * 50 + b"}"),
    ("object without text", b'{"txt": "typo in the field name"}'),
    ("labels not a list", b'{"text": "hello", "labels": "billing"}'),
    ("duplicate labels", b'{"text": "hello", "labels": ["a", "a"]}'),
    ("unknown label set", b'{"text": "hello", "label_set": "no-such-set"}'),
    ("id is an object", b'{"id": {"a": 1}, "text": "hello"}'),
    ("JSON nested 100k deep (200 KB)", b'{"text": "x", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("5,000-digit id", b'{"id": ' + b"9" * 5000 + b', "text": "hello"}'),
    ("NaN literal", b'{"text": "hello", "score": NaN}'),
    ("lone surrogate text", b'{"text": "\\ud800"}'),
    ("lone surrogate label", b'{"text": "hello", "labels": ["a", "\\udfff"]}'),
    ("NUL-only text", b'{"text": "\\u0000"}'),
    ("zero-width plain text", "\u200b\ufeff".encode()),
    ("20,000 labels", json.dumps({"text": "hello", "labels": [f"l{i}" for i in range(20_000)]}).encode()),
]


def cli() -> list[str]:
    script = Path(sys.executable).parent / "gliclass-stream"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.app.cli"]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Supervised:
    """The worker process; restarted when it dies. Counts the exits nobody asked for."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.starts = 0
        self.unplanned_exits: list[int] = []
        self.killing = False
        self.retired = False
        self.proc = self._start()
        self.lock = threading.Lock()

    def kill(self) -> None:
        """SIGKILL, not restarted (a member that leaves the group for good)."""
        with self.lock:
            self.killing = self.retired = True
            self.proc.kill()
            self.proc.wait(30)

    def _start(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        return subprocess.Popen(
            [*cli(), "worker", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def check(self) -> None:
        with self.lock:
            code = self.proc.poll()
            if code is not None and not self.killing:
                self.unplanned_exits.append(code)
                self.proc = self._start()

    def kill_and_restart(self) -> None:
        with self.lock:
            self.killing = True
            self.proc.kill()
            self.proc.wait(30)
            self.proc = self._start()
            self.killing = False

    def stop(self) -> int:
        with self.lock:
            if self.retired:
                return -9
            self.killing = True
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return -9


def write_config(
    path: Path,
    bootstrap: str,
    args: argparse.Namespace,
    src: str,
    out: str,
    dlq: str,
    instance: str = "soak",
    group: str = "",
) -> None:
    limit = f'"message.max.bytes" = {OUTPUT_LIMIT}' if args.scale_out else ""
    threshold = "threshold = 0.0" if args.scale_out else ""
    path.write_text(
        f"""
[model]
id = "{args.model}"
device = "cpu"

[label_sets.support]
labels = ["billing", "bug report", "feature request"]

[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group or "soak-" + uuid.uuid4().hex[:8]}"
delivery = "{args.delivery}"
instance_id = "{instance}"
batch_size = 64
commit_interval_ms = {500 if args.delivery == "exactly-once" else 200}
retry_backoff_ms = 200

[kafka.consumer]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500

[kafka.producer]
# Deliveries time out while the broker is frozen, so the re-send path runs.
"message.timeout.ms" = {args.message_timeout_ms}
{limit}

[[kafka.routes]]
input = "{src}"
output = "{out}"
dlq = "{dlq}"
label_set = "support"
{threshold}
"""
    )


#: The producer's message.max.bytes in --scale-out runs; oversized events' outputs exceed it.
OUTPUT_LIMIT = 60_000


def oversized_event(seq: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """An event the worker accepts whose output is over OUTPUT_LIMIT: a 21 KB header (carried to
    the output) and 100 labels of 200 characters, all predicted (threshold 0), each written twice."""
    labels = [f"fresh label {seq}-{n} ".ljust(200, "x") for n in range(100)]
    value = json.dumps({"id": f"big{seq}", "text": f"{TEXTS[seq % len(TEXTS)]} ({seq})", "labels": labels})
    return value.encode(), [("soak.pad", b"p" * 21_000)]


def produce_traffic(bootstrap: str, src: str, args: argparse.Namespace, sent: dict[int, str]) -> None:
    """Produce `rate` records a second for `duration` seconds; every 10th is hostile."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.timeout.ms": 600000})
    start = time.monotonic()
    total = int(args.duration * args.rate)
    for seq in range(total):
        while time.monotonic() < start + seq / args.rate:
            producer.poll(0.01)
        extra: list[tuple[str, bytes]] = []
        if seq % 10 == 9:
            name, value = HOSTILE[(seq // 10) % len(HOSTILE)]
            sent[seq] = f"hostile: {name}"
        elif args.scale_out and seq % args.oversized_every == args.oversized_every - 2:
            value, extra = oversized_event(seq)
            sent[seq] = "oversized"
        else:
            event: dict[str, object] = {"id": f"e{seq}", "text": f"{TEXTS[seq % len(TEXTS)]} ({seq})"}
            if args.scale_out and seq % 5 == 0:
                event["labels"] = ["billing", "bug report", *(f"new label {seq}-{n}" for n in range(10))]
            value = json.dumps(event).encode()
            sent[seq] = "good"
        while True:
            try:
                producer.produce(
                    src,
                    value=value,
                    key=f"k{seq}".encode(),
                    headers=[("soak.seq", str(seq).encode()), *extra],
                )
                break
            except BufferError:
                producer.poll(0.1)
    while producer.flush(5) > 0:
        pass


class Reader(threading.Thread):
    """Reads outputs and dead letters as they arrive (read_committed in exactly-once mode)."""

    def __init__(self, bootstrap: str, topics: list[str], partitions: int, isolation: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"soak-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": isolation,
            }
        )
        self.consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(partitions)])
        self.records: list[tuple[str, int, str | None, str | None]] = []  # topic, seq, txn, reason
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for m in self.consumer.consume(500, 0.2):
                if m.error() is not None:
                    continue
                h = header_map(record_headers(m))
                if "soak.seq" in h:
                    self.records.append(
                        (m.topic() or "", int(h["soak.seq"]), h.get("gliclass.txn"), h.get("error.reason"))
                    )
        self.consumer.close()


def exactly_once_duplicates(records: list[tuple[str, int, str | None, str | None]]) -> tuple[int, int]:
    """(duplicates a read_committed reader on Apache Kafka sees, transactions judged aborted)."""
    by_txn: dict[str | None, set[int]] = defaultdict(set)
    order: list[str | None] = []
    for _topic, seq, txn, _reason in records:
        if txn not in by_txn:
            order.append(txn)
        by_txn[txn].add(seq)
    # A transaction is aborted (hidden) when every one of its records was written again later.
    later: set[int] = set()
    aborted = set()
    first_seen: dict[str | None, int] = {}
    for i, (_t, _seq, txn, _r) in enumerate(records):
        first_seen.setdefault(txn, i)
    for txn in sorted(by_txn, key=first_seen.__getitem__, reverse=True):
        if txn is not None and by_txn[txn] <= later:
            aborted.add(txn)
        later |= by_txn[txn]
    kept = Counter(seq for _t, seq, txn, _r in records if txn not in aborted)
    return sum(c - 1 for c in kept.values()), len(aborted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of traffic (default 180)")
    parser.add_argument("--rate", type=float, default=15.0, help="records per second (default 15)")
    parser.add_argument("--delivery", choices=("at-least-once", "exactly-once"), default="at-least-once")
    parser.add_argument("--model", default="builtin:minilm")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--broker-stop-at", type=float, default=0.3, help="fraction of the run (default 0.3)")
    parser.add_argument("--broker-stop-seconds", type=float, default=10.0)
    parser.add_argument("--kill-at", type=float, default=0.6, help="fraction of the run (default 0.6)")
    parser.add_argument("--message-timeout-ms", type=int, default=5000)
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for the backlog")
    parser.add_argument("--scale-out", action="store_true", help="2nd and 3rd worker join, the 1st is killed")
    parser.add_argument("--oversized-every", type=int, default=25, help="--scale-out: 1 event in N too large")
    args = parser.parse_args()
    print_machine()

    run = uuid.uuid4().hex[:6]
    src, out, dlq = f"soak-in-{run}", f"soak-out-{run}", f"soak-dlq-{run}"
    tmp = Path(tempfile.mkdtemp(prefix="gliclass-soak-"))
    group = f"soak-{run}"
    with EmbeddedBroker() as broker:
        assert broker.process is not None
        bootstrap = broker.bootstrap_servers
        create_topics(bootstrap, {src: args.partitions, out: args.partitions, dlq: args.partitions})

        def start_worker(name: str) -> Supervised:
            config = tmp / f"{name}.toml"
            write_config(config, bootstrap, args, src, out, dlq, instance=f"soak-{name}", group=group)
            return Supervised(config, tmp / f"{name}.log")

        isolation = "read_committed" if args.delivery == "exactly-once" else "read_uncommitted"
        reader = Reader(bootstrap, [out, dlq], args.partitions, isolation)
        reader.start()
        workers = {"w1": start_worker("w1")}
        worker = workers["w1"]
        # Wait for the model to load, so the faults land mid-stream and not during start-up.
        deadline = time.monotonic() + 300
        while "ready" not in worker.log.read_text(errors="replace"):
            worker.check()
            assert time.monotonic() < deadline, "the worker did not become ready"
            time.sleep(0.2)
        sent: dict[int, str] = {}
        traffic = threading.Thread(target=produce_traffic, args=(bootstrap, src, args, sent), daemon=True)
        start = time.monotonic()
        traffic.start()
        rss: dict[str, list[tuple[float, float]]] = defaultdict(list)
        if args.scale_out:
            events = {
                "join w2": 0.2 * args.duration,
                "join w3": 0.4 * args.duration,
                "kill w1": 0.6 * args.duration,
            }
        else:
            events = {
                "broker_stop": args.broker_stop_at * args.duration,
                "kill": args.kill_at * args.duration,
            }
        broker_stopped_until = None
        next_rss = 0.0
        total = int(args.duration * args.rate)
        end_wait = None
        while True:
            now = time.monotonic() - start
            for w in workers.values():
                if not w.retired:
                    w.check()
            for name, at in list(events.items()):
                if now < at:
                    continue
                del events[name]
                if name.startswith("join "):
                    workers[name[5:]] = start_worker(name[5:])
                    print(f"[{now:6.1f}s] worker {name[5:]} joins the group", flush=True)
                elif name.startswith("kill "):
                    workers[name[5:]].kill()
                    print(f"[{now:6.1f}s] worker {name[5:]} SIGKILL (not restarted)", flush=True)
                elif name == "broker_stop":
                    os.kill(broker.process.pid, signal.SIGSTOP)
                    broker_stopped_until = now + args.broker_stop_seconds
                    print(f"[{now:6.1f}s] broker SIGSTOP for {args.broker_stop_seconds:.0f} s", flush=True)
                elif name == "kill":
                    worker.kill_and_restart()
                    print(f"[{now:6.1f}s] worker SIGKILL, restarted", flush=True)
            if broker_stopped_until is not None and now >= broker_stopped_until:
                os.kill(broker.process.pid, signal.SIGCONT)
                broker_stopped_until = None
                print(f"[{now:6.1f}s] broker SIGCONT", flush=True)
            if now >= next_rss:
                for name, w in workers.items():
                    mb = None if w.retired else rss_mb(w.proc.pid)
                    if mb is not None:
                        rss[name].append((now, mb))
                next_rss = now + 5.0
            done = {seq for _t, seq, _x, _r in reader.records}
            if not traffic.is_alive() and end_wait is None:
                end_wait = time.monotonic()
                print(
                    f"[{now:6.1f}s] traffic done ({len(sent)} records); waiting for the backlog", flush=True
                )
            if end_wait is not None and (
                len(done) >= total or time.monotonic() - end_wait > args.drain_timeout
            ):
                break
            time.sleep(0.2)
        time.sleep(3.0)  # late duplicates
        codes = {name: w.stop() for name, w in workers.items()}
        reader.done.set()
        reader.join(10)

    records = reader.records
    outputs = [r for r in records if r[0] == out]
    dead = [r for r in records if r[0] == dlq]
    good = {s for s, kind in sent.items() if kind == "good"}
    oversized = {s for s, kind in sent.items() if kind == "oversized"}
    hostile = set(sent) - good - oversized
    seen = {r[1] for r in records}
    lost = sorted(set(sent) - seen)
    reasons = Counter(r[3] for r in {(r[1], r[3]): r for r in dead}.values())
    copies = Counter(r[1] for r in records)
    if args.delivery == "exactly-once":
        duplicates, aborted = exactly_once_duplicates(records)
        dup_line = (
            f"duplicates seen by a read_committed reader: {duplicates} "
            f"(records of {aborted} aborted transactions left out; {sum(c - 1 for c in copies.values())} raw)"
        )
    else:
        dup_line = f"duplicates (at-least-once): {sum(c - 1 for c in copies.values())}"
    rebalances = sum(
        w.log.read_text(errors="replace").count("INFO gliclass.worker: assigned") for w in workers.values()
    )
    print()
    print(
        f"delivery {args.delivery}, {args.duration:.0f} s at {args.rate:g} records/s, "
        f"{args.partitions} partitions, workers: {', '.join(workers)}"
    )
    print(
        f"events in: {len(sent)} ({len(good)} good, {len(hostile)} hostile of {len(HOSTILE)} kinds, "
        f"{len(oversized)} with an output too large to produce)"
    )
    print(f"outputs: {len({r[1] for r in outputs})} events scored ({len(outputs)} records)")
    by_reason = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    print(f"dead letters: {len({r[1] for r in dead})} ({by_reason})")
    scored_seqs, dead_seqs = {r[1] for r in outputs}, {r[1] for r in dead}
    print(f"good events dead-lettered: {len(good & dead_seqs)}; hostile scored: {len(hostile & scored_seqs)}")
    if oversized:
        print(
            "oversized outputs dead-lettered as delivery_failed: "
            f"{len(oversized & dead_seqs)} of {len(oversized)}"
        )
    print(f"lost: {len(lost)}{' ' + str(lost[:20]) if lost else ''}")
    print(dup_line)
    print(f"rebalances (partition assignments logged by the workers): {rebalances}")
    for name, w in workers.items():
        print(
            f"worker {name}: starts {w.starts}; unplanned exits: {len(w.unplanned_exits)} "
            f"{w.unplanned_exits or ''}; final exit {codes[name]}"
        )
    for name, series in rss.items():
        half = len(series) // 2
        print(
            f"worker {name} RSS MB over time: "
            + " ".join(f"{t:.0f}s:{mb:.0f}" for t, mb in series[:: max(1, len(series) // 12)])
            + f" (max first half {max((m for _, m in series[:half]), default=0):.0f}, "
            f"second half {max((m for _, m in series[half:]), default=0):.0f})"
        )
    print(f"worker logs: {tmp}")


if __name__ == "__main__":
    main()
