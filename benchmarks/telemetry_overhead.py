"""Throughput with tracing + metrics on vs off, same process, same model, rounds interleaved.

Usage (prints per-round rates, the on/off ratio per pair and the median ratio; target <= 5% slower):

    python benchmarks/telemetry_overhead.py                       # gRPC and Kafka, OTLP stand-in collector
    python benchmarks/telemetry_overhead.py --export memory       # in-memory exporters instead
    python benchmarks/telemetry_overhead.py --otlp-endpoint http://localhost:4317  # a real collector
    python benchmarks/telemetry_overhead.py --edges grpc --pairs 20 --calls 8      # more, shorter pairs

"On" is what `gliclass-stream serve` runs with OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER set:
a TracerProvider with a BatchSpanProcessor, a MeterProvider with a periodic reader (1 s here, so
exporting happens during the measurement), the gRPC interceptor's server spans, the scheduler's
batch spans with links, the worker's receive/process/send spans with header injection, and every
metric instrument. "Off" is the default: no SDK, every hook a no-op. Clients send W3C
`traceparent` in both modes (a traced producer/caller), so only the server side differs.

The OTLP stand-in collector is a separate process (an OTLP/gRPC server that decodes and counts
what it receives), so export really crosses a socket and is serialised as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from machine import print_machine  # benchmarks/machine.py: the machine line

from gliclass_core import telemetry
from gliclass_core.config import parse_config
from gliclass_core.runtime import Runtime
from gliclass_core.runtime import tracing as runtime_tracing

LABEL_SETS = {"support": {"labels": ["billing", "bug report", "feature request", "account access"]}}
WORDS = (
    "my card was charged twice the app crashes when I open settings please add dark mode export fails".split()
)

COLLECTOR = r"""
import sys, threading
from concurrent import futures
import grpc
# Accepts OTLP/gRPC exports and counts them without decoding: a real collector runs elsewhere,
# so on this machine it should take as little CPU from the measured process as it can.
counts = {"trace_requests": 0, "trace_bytes": 0, "metric_requests": 0, "metric_bytes": 0}
lock = threading.Lock()
def handler(kind):
    def export(request, context):
        with lock:
            counts[kind + "_requests"] += 1
            counts[kind + "_bytes"] += len(request)
        return b""  # an empty Export*ServiceResponse
    return grpc.unary_unary_rpc_method_handler(export)
services = {
    "opentelemetry.proto.collector.trace.v1.TraceService": {"Export": handler("trace")},
    "opentelemetry.proto.collector.metrics.v1.MetricsService": {"Export": handler("metric")},
}
server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.max_receive_message_length", 64 << 20)])
for name, methods in services.items():
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, methods),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()
server.stop(0)
print(counts, flush=True)
"""


def texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(6, 30))) for _ in range(n)]


def traceparent() -> str:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


class Telemetry:
    """Switch gliclass telemetry on (fresh SDK providers and exporters) and off (none installed)."""

    def __init__(self, export: str, endpoint: str | None) -> None:
        self.export = export
        self.collector: subprocess.Popen[str] | None = None
        if export == "otlp" and endpoint is None:
            self.collector = subprocess.Popen(
                [sys.executable, "-c", COLLECTOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            assert self.collector.stdout is not None
            endpoint = f"http://127.0.0.1:{self.collector.stdout.readline().strip()}"
        self.endpoint = endpoint
        self.spans_in_memory = 0
        self._providers: tuple[Any, Any, Any] | None = None
        self._off_tracer = runtime_tracing._tracer

    def on(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        if self.export == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            span_exporter: Any = OTLPSpanExporter(endpoint=self.endpoint, insecure=True)
            reader: Any = PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=self.endpoint, insecure=True), export_interval_millis=1000
            )
        else:
            span_exporter = InMemorySpanExporter()
            reader = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        # A queue large enough that no span is dropped: every span's export cost is counted.
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter, max_queue_size=1 << 17))
        meter_provider = MeterProvider(metric_readers=[reader])
        self._providers = (tracer_provider, meter_provider, span_exporter)
        telemetry.install(tracer_provider, meter_provider)
        runtime_tracing._tracer = tracer_provider.get_tracer("gliclass_core.runtime")

    def off(self) -> None:
        telemetry.uninstall()
        runtime_tracing._tracer = self._off_tracer
        if self._providers is not None:
            tracer_provider, meter_provider, span_exporter = self._providers
            self._providers = None
            tracer_provider.shutdown()  # flushes the batch processor
            meter_provider.shutdown()
            if self.export == "memory":
                self.spans_in_memory += len(span_exporter.get_finished_spans())

    def close(self) -> str:
        self.off()
        if self.collector is not None:
            out, _ = self.collector.communicate("", timeout=30)
            return f"stand-in OTLP collector received {out.strip()}"
        if self.export == "otlp":
            return f"exported to {self.endpoint}"
        return f"in-memory exporters held {self.spans_in_memory} spans"


# --------------------------------------------------------------------------- gRPC


class Server:
    """A GrpcServer on its own event loop thread (as `serve` runs it), port 0."""

    def __init__(self, runtime: Runtime) -> None:
        from server.grpc.config import parse_grpc_config
        from server.grpc.server import GrpcServer

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = parse_grpc_config({"address": "127.0.0.1:0", "max_items_per_request": 256})
        self.server = GrpcServer(runtime, config)
        port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(60)
        self.address = f"127.0.0.1:{port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def grpc_round(address: str, calls: int, items: int, concurrency: int, seed: int) -> tuple[float, float]:
    """Unary Classify calls of `items` texts from `concurrency` threads; return (items/s, CPU s per item)."""
    from server.proto import classifier_pb2 as pb
    from server.proto import classifier_pb2_grpc

    requests = [
        pb.ClassifyRequest(
            items=[
                pb.Item(id=str(i), text=t, label_set="support") for i, t in enumerate(texts(items, seed + c))
            ]
        )
        for c in range(calls)
    ]
    with grpc.insecure_channel(address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        stub.Classify(requests[0], timeout=60)  # connection up before the clock starts

        def call(request: Any) -> int:
            return len(stub.Classify(request, metadata=[("traceparent", traceparent())], timeout=120).results)

        started, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(concurrency) as pool:
            done = sum(pool.map(call, requests))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert done == calls * items
    return done / elapsed, cpu / done


# --------------------------------------------------------------------------- Kafka


def kafka_round(runtime: Runtime, bootstrap: str, events: int, seed: int) -> tuple[float, float]:
    """Pre-produce traced events, run a fresh worker; (outputs/s, CPU s/output) from first to last output."""
    from confluent_kafka import Consumer, Producer

    from worker.app import KafkaWorker
    from worker.broker import create_topics

    run = uuid.uuid4().hex[:8]
    topic_in, topic_out, topic_dlq = f"bench-in-{run}", f"bench-out-{run}", f"bench-dlq-{run}"
    create_topics(bootstrap, {topic_in: 3, topic_out: 3, topic_dlq: 1})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, text in enumerate(texts(events, seed)):
        value = json.dumps({"id": str(i), "text": text}).encode()
        producer.produce(
            topic_in, value=value, partition=i % 3, headers=[("traceparent", traceparent().encode())]
        )
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    session = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    config = parse_config(
        {
            "model": {"id": "builtin:minilm", "device": "cpu"},
            "label_sets": LABEL_SETS,
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": f"bench-{run}",
                "consumer": session,
                "routes": [
                    {"input": topic_in, "output": topic_out, "dlq": topic_dlq, "label_set": "support"}
                ],
            },
        }
    )
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{run}",
            "auto.offset.reset": "earliest",
            **session,
        }
    )
    reader.subscribe([topic_out])
    worker = KafkaWorker(runtime, config)
    worker.start()
    seen, first, last, cpu_first, cpu_last = 0, 0.0, 0.0, 0.0, 0.0
    deadline = time.monotonic() + 600
    try:
        while seen < events and time.monotonic() < deadline:
            for msg in reader.consume(500, 0.5):
                if msg.error() is None:
                    now, cpu = time.perf_counter(), time.process_time()
                    if not first:
                        first, cpu_first = now, cpu
                    last, cpu_last = now, cpu
                    seen += 1
    finally:
        reader.close()
        worker.stop(30)
    assert seen == events, f"only {seen} of {events} outputs arrived"
    return (events - 1) / (last - first), (cpu_last - cpu_first) / (events - 1)


# --------------------------------------------------------------------------- per-event hook cost


def hook_cost(switch: Telemetry, events: int = 20000) -> dict[str, float]:
    """Microseconds per Kafka event in the worker's telemetry hooks, off and on (no model, no broker)."""
    from types import SimpleNamespace

    from worker.tracing import WorkerTracing

    class Msg:
        def __init__(self, i: int) -> None:
            self.i = i

        def headers(self) -> list[tuple[str, bytes]]:
            return [("traceparent", f"00-{self.i:032x}-{self.i:016x}-01".encode())]

        def topic(self) -> str:
            return "in"

        def partition(self) -> int:
            return 0

    class Consumer:
        def __init__(self, msgs: list[Msg]) -> None:
            self.msgs = msgs

        def poll_batch(self, n: int, timeout: float) -> list[Msg]:
            return self.msgs

        def high_watermark(self, tp: tuple[str, int]) -> int:
            return 0

    class Slot:  # hashable by identity and weakly referenceable, like the loop's slots
        def __init__(self, **fields: Any) -> None:
            self.__dict__.update(fields)

    tracker = SimpleNamespace(positions=dict)
    out = {}
    for mode in ("off", "on"):
        (switch.on if mode == "on" else switch.off)()
        hooks = WorkerTracing("bench")
        msgs = [Msg(i + 1) for i in range(events)]
        slots = [Slot(tp=("in", 0), offset=i, key=None, value=b"x" * 40, bad=None) for i in range(events)]
        started = time.process_time()  # CPU, not wall: other load on the machine does not count
        for start in range(0, events, 500):
            batch = hooks.poll(Consumer(msgs[start : start + 500]), tracker, 500, 0.0)
            for msg, slot in zip(batch, slots[start : start + 500]):
                hooks.accepted(slot, msg)
            hooks.span_contexts(slots[start : start + 500])
            for slot in slots[start : start + 500]:
                hooks.sending(slot, "out", [])
                hooks.sent(slot)
                hooks.delivered(slot, None)
        out[mode] = (time.process_time() - started) / events * 1e6
    switch.off()
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--edges", default="grpc,kafka", help="comma-separated: grpc, kafka")
    parser.add_argument("--pairs", type=int, default=10, help="off/on round pairs per edge (interleaved)")
    parser.add_argument("--kafka-pairs", type=int, default=4, help="off/on round pairs for Kafka")
    parser.add_argument(
        "--calls", type=int, default=8, help="gRPC calls per round (short rounds: less drift)"
    )
    parser.add_argument("--items", type=int, default=16, help="texts per gRPC call")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent gRPC callers")
    parser.add_argument("--events", type=int, default=400, help="Kafka events per round")
    parser.add_argument("--export", choices=("otlp", "memory"), default="otlp")
    parser.add_argument("--otlp-endpoint", help="an OTLP/gRPC collector instead of the stand-in")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=1,
        help="torch threads on CPU (1: no OpenMP spinning, steadier CPU/item)",
    )
    args = parser.parse_args()
    print_machine()
    edges = [e.strip() for e in args.edges.split(",") if e.strip()]

    app_config = parse_config(
        {
            "model": {"id": "builtin:minilm", "device": args.device, "cpu_threads": args.cpu_threads},
            "batching": {"max_batch_size": 64, "max_wait_ms": 5},
            "label_sets": LABEL_SETS,
        }
    )
    runtime = Runtime.from_config(app_config)
    telemetry.observe_runtime(runtime)
    runtime.start()
    assert runtime.wait_ready(600), runtime.error
    switch = Telemetry(args.export, args.otlp_endpoint)
    print(f"device {runtime.info.device}, export {args.export}, {os.cpu_count()} CPUs", flush=True)
    results: dict[str, list[dict[str, tuple[float, float]]]] = {}
    broker = None
    try:
        server = Server(runtime) if "grpc" in edges else None
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if "kafka" in edges and not bootstrap:
            from worker.broker import EmbeddedBroker

            broker = EmbeddedBroker().start()
            bootstrap = broker.bootstrap_servers
        for edge in edges:
            pairs = []
            for pair in range(args.pairs if edge == "grpc" else args.kafka_pairs):
                measured = {}
                # Alternate which mode goes first so drift on a shared machine hits both alike.
                for mode in ("off", "on") if pair % 2 == 0 else ("on", "off"):
                    (switch.on if mode == "on" else switch.off)()
                    if edge == "grpc":
                        assert server is not None
                        rate, cpu = grpc_round(server.address, args.calls, args.items, args.concurrency, pair)
                    else:
                        assert bootstrap is not None
                        rate, cpu = kafka_round(runtime, bootstrap, args.events, pair)
                    measured[mode] = (rate, cpu)
                    print(
                        f"{edge} pair {pair + 1} telemetry {mode:3s}: {rate:8.1f} items/s"
                        f"  {cpu * 1000:7.2f} ms CPU/item",
                        flush=True,
                    )
                switch.off()
                pairs.append(measured)
            results[edge] = pairs
        if server is not None:
            server.close()
        # Last, so exporting its many spans cannot overlap a measured round.
        hooks = hook_cost(switch)
    finally:
        exported = switch.close()
        if broker is not None:
            broker.stop()
        runtime.stop(grace_s=5)
    print(f"\nexport: {exported}")
    print(
        f"worker hooks per event: {hooks['off']:.2f} us CPU with telemetry off, {hooks['on']:.1f} us on"
        " (receive + process + send spans, header injection, metrics, export)"
    )
    print(
        f"{'edge':6s} {'off items/s':>12s} {'on items/s':>12s} {'on/off':>7s} {'pooled':>7s}"
        f" {'off ms CPU':>11s} {'on ms CPU':>10s} {'CPU off/on':>10s}  per-pair throughput ratios"
    )
    for edge, pairs in results.items():
        rate_off = statistics.median(p["off"][0] for p in pairs)
        rate_on = statistics.median(p["on"][0] for p in pairs)
        cpu_off = statistics.median(p["off"][1] for p in pairs)
        cpu_on = statistics.median(p["on"][1] for p in pairs)
        ratios = [p["on"][0] / p["off"][0] for p in pairs]
        # Pooled: the same work per round, so total time off / total time on = throughput on / off.
        pooled = sum(1 / p["off"][0] for p in pairs) / sum(1 / p["on"][0] for p in pairs)
        print(
            f"{edge:6s} {rate_off:12.1f} {rate_on:12.1f} {statistics.median(ratios):7.3f} {pooled:7.3f}"
            f" {cpu_off * 1000:11.2f} {cpu_on * 1000:10.2f} {cpu_off / cpu_on:10.3f}"
            f"  {', '.join(f'{r:.3f}' for r in ratios)}"
        )
    print(
        "Target: on/off >= 0.95 (<= 5% slower). on/off = median of per-pair throughput ratios (rounds\n"
        "interleaved, order alternating); pooled = total time off / total time on; CPU off/on = process\n"
        "CPU per item off / on, what a saturated CPU-bound process would see."
    )


if __name__ == "__main__":
    main()
