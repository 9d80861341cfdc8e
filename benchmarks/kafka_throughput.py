"""Kafka worker figures: end-to-end events/s vs the pool's offline throughput, and latency at half rate.

    python benchmarks/kafka_throughput.py [--events 3000] [--latency-seconds 20]
    python benchmarks/kafka_throughput.py --host-bound --events 1024    # tiny model: the host path alone

Starts the embedded tansu broker (or uses KAFKA_BOOTSTRAP_SERVERS), the runtime with the
configured model (builtin:minilm by default) and a KafkaWorker in this process, then prints:
  offline   the same texts submitted straight to the scheduler at bulk priority
  worker    topic -> worker -> output topic, first consumed to last output read
  latency   p50/p99 from produce to the scored output being read, at half the worker's rate
  host      the model tokenizer's parallel encode_batch of the same texts, and both rates as a share
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from machine import print_machine  # benchmarks/machine.py: the machine line

from gliclass_core.config import parse_config
from gliclass_core.runtime import Priority, Runtime
from gliclass_core.types import ClassifyItem
from server.app.host_bench import NEWS_LABELS, host_ceiling, news_texts, share_line, tiny_model_dir
from worker.app import KafkaWorker
from worker.broker import EmbeddedBroker, create_topics

LABELS = ["billing", "bug report", "feature request", "account access", "praise"]
WORDS = (
    "my card was charged twice for the same order and support never answered the app crashes when I "
    "open settings please add dark mode I cannot log in after the update great service thanks a lot"
).split()


def make_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(n)]


def offline_rate(runtime: Runtime, texts: list[str], chunk: int) -> float:
    items = [ClassifyItem(text=t, labels=tuple(LABELS)) for t in texts]
    start = time.perf_counter()
    futures = []
    for i in range(0, len(items), chunk):
        futures += runtime.scheduler.submit(items[i : i + chunk], priority=Priority.BULK)
    for f in futures:
        f.result()
    return len(items) / (time.perf_counter() - start)


def read_outputs(bs: str, topic: str, n: int, on_record=None, timeout: float = 600.0) -> float:
    """Read `n` records from the start of `topic`; return the wall time of the last one."""
    consumer = Consumer(
        {
            "bootstrap.servers": bs,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 20,
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    seen, last, deadline = 0, time.perf_counter(), time.monotonic() + timeout
    while seen < n and time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.05):
            if msg.error() is None:
                seen += 1
                last = time.perf_counter()
                if on_record is not None:
                    on_record(msg, last)
    consumer.close()
    if seen < n:
        raise SystemExit(f"only {seen} of {n} outputs arrived on {topic}")
    return last


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--model", default="builtin:minilm")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--host-bound",
        action="store_true",
        help="tiny model (forward nearly free), news texts of 20-200 words, 10 labels, 1 intra-op thread",
    )
    args = parser.parse_args()
    print_machine()
    global LABELS
    model: dict[str, object] = {"id": args.model, "device": args.device}
    if args.host_bound:
        LABELS = list(NEWS_LABELS)
        model = {"id": str(tiny_model_dir()), "device": "cpu", "cpu_threads": 1}

    broker = None
    bs = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bs:
        broker = EmbeddedBroker().start()
        bs = broker.bootstrap_servers
    run = uuid.uuid4().hex[:6]
    topics = {f"bench-in-{run}": 3, f"bench-out-{run}": 3, f"bench-lat-{run}": 3, f"bench-latout-{run}": 3}
    in_t, out_t, lat_in, lat_out = topics
    create_topics(bs, topics)
    app = parse_config(
        {
            "model": model,
            "label_sets": {"support": {"labels": LABELS}},
            "kafka": {
                "bootstrap_servers": bs,
                "group_id": f"bench-{run}",
                "consumer": {"session.timeout.ms": 6000},
                "routes": [
                    {"input": in_t, "output": out_t, "label_set": "support"},
                    {"input": lat_in, "output": lat_out, "label_set": "support"},
                ],
            },
        }
    )
    runtime = Runtime.from_config(app)
    runtime.start()
    if not runtime.wait_ready(600):
        raise SystemExit(f"model failed to load: {runtime.error}")
    texts = news_texts(args.events, seed=3) if args.host_bound else make_texts(args.events)
    offline_rate(runtime, texts[:128], 128)  # warm the label-prompt cache and allocator

    producer = Producer({"bootstrap.servers": bs, "linger.ms": 5})
    worker = KafkaWorker(runtime, app)
    worker.start()
    # One warm-up event through the worker, so the group join is not measured.
    producer.produce(in_t, key=b"warm", value=json.dumps({"id": "warm", "text": texts[0]}).encode())
    producer.flush()
    read_outputs(bs, out_t, 1)

    # The machine is shared and noisy: bracket the worker run between two offline runs.
    ceiling_before = host_ceiling(runtime.classifier, texts)
    offline_before = offline_rate(runtime, texts, 256)
    start = time.perf_counter()
    for i, text in enumerate(texts):
        producer.produce(in_t, key=str(i).encode(), value=json.dumps({"id": str(i), "text": text}).encode())
    producer.flush()
    last = read_outputs(bs, out_t, len(texts) + 1)
    e2e = len(texts) / (last - start)
    offline_after = offline_rate(runtime, texts, 256)
    ceiling = (ceiling_before + host_ceiling(runtime.classifier, texts)) / 2
    offline = (offline_before + offline_after) / 2
    print(
        f"offline  {offline:8.1f} events/s  (scheduler, bulk, {len(texts)} texts; "
        f"{offline_before:.1f} before, {offline_after:.1f} after the worker run)"
    )
    print(f"worker   {e2e:8.1f} events/s  (produce -> worker -> output topic read, same texts)")
    print(f"ratio    {e2e / offline:8.3f}")
    print(f"host     {ceiling:8.1f} texts/s  (tokenizer encode_batch of the same texts, parallel)")
    print(share_line("offline (scheduler, bulk)", offline, ceiling))
    print(share_line("worker end to end", e2e, ceiling))

    rate = e2e / 2
    n = max(50, int(rate * args.latency_seconds))
    sent: dict[str, float] = {}
    latencies: list[float] = []
    in_worker: list[float] = []

    def on_record(msg, now):
        body = json.loads(msg.value())
        latencies.append((now - sent[body["id"]]) * 1000)
        in_worker.append(body["latency_ms"])

    reader = threading.Thread(target=read_outputs, args=(bs, lat_out, n, on_record), daemon=True)
    reader.start()
    time.sleep(2.0)  # let the reader's assignment settle before the clock starts
    lat_texts = news_texts(n, seed=11) if args.host_bound else make_texts(n, seed=11)
    t0 = time.perf_counter()
    for i, text in enumerate(lat_texts):
        target = t0 + i / rate
        while (now := time.perf_counter()) < target:
            time.sleep(min(0.002, target - now))
        sent[str(i)] = time.perf_counter()
        producer.produce(lat_in, key=str(i).encode(), value=json.dumps({"id": str(i), "text": text}).encode())
        producer.poll(0)
    producer.flush()
    reader.join()
    q = statistics.quantiles(latencies, n=100)
    w = statistics.quantiles(in_worker, n=100)
    print(
        f"latency  p50 {q[49]:.1f} ms  p99 {q[98]:.1f} ms  at {rate:.1f} events/s ({n} events, half max rate)"
    )
    print(f"         of which consumed -> scored in the worker: p50 {w[49]:.1f} ms  p99 {w[98]:.1f} ms")
    worker.stop(30)
    runtime.stop(grace_s=5)
    if broker is not None:
        broker.stop()


if __name__ == "__main__":
    main()
