"""Interactive gRPC latency while a Kafka backlog fills the bulk share of the scheduler's queue.

One process: the real builtin model (CPU), the embedded broker, a real `KafkaWorker` with a large
backlog of long events, and the real gRPC server. The same sequence of unary `Classify` calls
(4 items each) is timed twice: alone, then while the worker keeps the bulk share of the queue
full (`[batching] bulk_queue_share`). Prints p50 / p99 / max of each, the bulk queue depth seen
during the second phase and how many calls were refused (RESOURCE_EXHAUSTED: must be 0).

    python benchmarks/interactive_under_backlog.py --calls 60 --backlog 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
import uuid

import grpc

from gliclass_core.config import parse_config
from gliclass_core.runtime import Runtime
from server.grpc.config import parse_grpc_config
from server.grpc.server import GrpcServer
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc
from worker.app import KafkaWorker
from worker.broker import EmbeddedBroker, create_topics

LONG = "The invoice shows two charges for one order and the app crashed when I asked for a refund. "


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed_calls(stub: classifier_pb2_grpc.ClassifierStub, calls: int) -> tuple[list[float], int]:
    latencies, refused = [], 0
    for i in range(calls):
        items = [
            pb.Item(id=f"{i}-{j}", text=f"my card was charged twice {i} {j}", label_set="support")
            for j in range(4)
        ]
        started = time.perf_counter()
        try:
            stub.Classify(pb.ClassifyRequest(items=items), timeout=60)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            refused += 1
            continue
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, refused


def line(name: str, latencies: list[float]) -> str:
    return (
        f"{name:<28} calls {len(latencies):4d}  p50 {statistics.median(latencies):7.1f} ms  "
        f"p99 {percentile(latencies, 0.99):7.1f} ms  max {max(latencies):7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--backlog", type=int, default=3000, help="Kafka events produced before the run")
    parser.add_argument("--max-queue", type=int, default=2000)
    parser.add_argument("--bulk-share", type=float, default=0.8)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:6]
    src, out, dlq = f"bl-in-{run}", f"bl-out-{run}", f"bl-dlq-{run}"
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        create_topics(bootstrap, {src: 4, out: 4, dlq: 4})
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for i in range(args.backlog):
            producer.produce(
                src, json.dumps({"id": str(i), "text": f"{i} {LONG * 4}"}).encode(), partition=i % 4
            )
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush(30)
        config = parse_config(
            {
                "model": {"id": "builtin:minilm", "device": "cpu"},
                "batching": {"max_queue": args.max_queue, "bulk_queue_share": args.bulk_share},
                "label_sets": {"support": {"labels": ["billing", "bug report", "feature request"]}},
                "kafka": {
                    "bootstrap_servers": bootstrap,
                    "group_id": f"bl-{run}",
                    "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
                    "routes": [{"input": src, "output": out, "dlq": dlq, "label_set": "support"}],
                },
            }
        )
        runtime = Runtime.from_config(config)
        runtime.start()
        assert runtime.wait_ready(300), runtime.error
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        server = GrpcServer(runtime, parse_grpc_config({"address": "127.0.0.1:0"}))
        port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(60)
        worker = KafkaWorker(runtime, config)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = classifier_pb2_grpc.ClassifierStub(channel)
                timed_calls(stub, 5)  # warm the channel and the label cache
                alone, refused_alone = timed_calls(stub, args.calls)
                worker.start()
                scheduler = runtime.scheduler
                deadline = time.monotonic() + 120
                while scheduler.stats().queue_depth_bulk < scheduler.bulk_limit // 2:
                    assert time.monotonic() < deadline, "the backlog never filled the queue"
                    time.sleep(0.05)
                depths: list[int] = []
                sampling = threading.Event()

                def sample() -> None:
                    while not sampling.is_set():
                        depths.append(scheduler.stats().queue_depth_bulk)
                        time.sleep(0.05)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                busy, refused_busy = timed_calls(stub, args.calls)
                sampling.set()
                sampler.join()
        finally:
            worker.stop(0)
            asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)
            runtime.stop(grace_s=0)
    print(f"max_queue {args.max_queue}, bulk share {args.bulk_share} ({scheduler.bulk_limit} rows for bulk)")
    print(line("gRPC alone", alone))
    print(line("gRPC with Kafka backlog", busy))
    print(
        f"bulk queue depth during the second phase: median {statistics.median(depths):.0f}, "
        f"max {max(depths)} of {scheduler.bulk_limit}; worker scored {worker.stats().scored}"
    )
    print(f"calls refused (RESOURCE_EXHAUSTED): alone {refused_alone}, with backlog {refused_busy}")
    print(f"p99 ratio (with backlog / alone): {percentile(busy, 0.99) / percentile(alone, 0.99):.2f}")


if __name__ == "__main__":
    main()
