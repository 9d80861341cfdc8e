"""Kafka tracing and metrics end to end: real broker, real worker, real model, in-memory exporters.

A producer (this test) writes events carrying a W3C `traceparent` from its own spans; the worker's
process and send spans must belong to those traces, the output records must carry the trace on,
the batch spans must link each event's process span, and the metrics must count what was sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.kafka import worker_config
from opentelemetry import propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gliclass_core import telemetry
from gliclass_core.runtime import tracing as runtime_tracing
from gliclass_core.telemetry.metrics import value_of
from worker.app import KafkaWorker
from worker.codec import header_map

GOOD = 12
BAD = [b'{"text": "unterminated', b'{"id": "no-text"}']


class Otel:
    """In-memory span exporter and metric reader, installed as gliclass's telemetry for one test."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self, name: str | None = None) -> list[Any]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch, kafka_runtime: Any) -> Iterator[Otel]:
    otel = Otel()
    telemetry.install(otel.tracer_provider, otel.meter_provider)
    telemetry.observe_runtime(kafka_runtime)
    # The runtime's batch spans use the global tracer; a process sets that only once, so patch it.
    monkeypatch.setattr(runtime_tracing, "_tracer", otel.tracer_provider.get_tracer("gliclass_core.runtime"))
    yield otel
    telemetry.forget_runtime(kafka_runtime)
    telemetry.uninstall()
    otel.tracer_provider.shutdown()
    otel.meter_provider.shutdown()


def test_trace_flows_from_producer_through_worker_and_batches_to_output(
    kafka: Any, topic_name: Any, group_id: str, kafka_runtime: Any, otel: Otel
) -> None:
    topic_in, topic_out, topic_dlq = topic_name("tel-in"), topic_name("tel-out"), topic_name("tel-dlq")
    kafka.create_topics({topic_in: 2, topic_out: 2, topic_dlq: 1})
    producer_tracer = otel.tracer_provider.get_tracer("test-producer")
    producer = kafka.producer()
    sent: dict[int, Any] = {}  # producer span trace id -> its span context
    events = [
        json.dumps({"id": f"e{i}", "text": f"my card was charged twice, ticket {i}"}).encode()
        for i in range(GOOD)
    ]
    for i, value in enumerate([*events, *BAD]):
        with producer_tracer.start_as_current_span(f"send {topic_in}", kind=SpanKind.PRODUCER) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            producer.produce(
                topic_in, value=value, partition=i % 2, headers=[(k, v.encode()) for k, v in carrier.items()]
            )
            sent[span.get_span_context().trace_id] = span.get_span_context()
    # One event without any trace context: the worker starts a new trace for it.
    producer.produce(topic_in, value=b"an untraced plain text event about billing", partition=0)
    assert producer.flush(30) == 0

    app_config = worker_config(
        kafka, group_id, [{"input": topic_in, "output": topic_out, "dlq": topic_dlq, "label_set": "support"}]
    )
    worker = KafkaWorker(kafka_runtime, app_config)
    worker.start()
    try:
        records = kafka.read_all([topic_out, topic_dlq], GOOD + len(BAD) + 1)
        # Lag is recomputed on the loop thread about once a second: wait for it to reach zero.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lag = _lag_points(otel.reader.get_metrics_data(), topic_in)
            if lag and all(v == 0 for v in lag.values()):
                break
            time.sleep(0.2)
        metrics = otel.reader.get_metrics_data()
        stats = kafka_runtime.stats()
    finally:
        assert worker.stop(30)

    # --- records: each output carries its producer's trace on
    outputs = [m for m in records if m.topic() == topic_out]
    dead = [m for m in records if m.topic() == topic_dlq]
    assert len(outputs) == GOOD + 1 and len(dead) == len(BAD)
    process_spans = {s.context.span_id: s for s in otel.finished(f"process {topic_in}")}
    send_spans = {s.context.span_id: s for s in otel.spans.get_finished_spans() if s.name.startswith("send ")}
    traced_outputs = 0
    for record in [*outputs, *dead]:
        context = trace.get_current_span(propagate.extract(header_map(record.headers()))).get_span_context()
        assert context.is_valid, "every output record carries a traceparent"
        send = send_spans[context.span_id]  # the header names the worker's send span ...
        assert send.kind is SpanKind.PRODUCER and send.name == f"send {record.topic()}"
        process = process_spans[send.parent.span_id]  # ... whose parent is the event's process span
        assert process.kind is SpanKind.CONSUMER
        assert process.attributes["messaging.consumer.group.name"] == group_id
        assert process.attributes["messaging.destination.partition.id"] == str(record_source(record)[0])
        assert process.attributes["messaging.kafka.offset"] == record_source(record)[1]
        if context.trace_id in sent:
            traced_outputs += 1
            assert process.parent.span_id == sent[context.trace_id].span_id  # continues the producer
        else:
            assert process.parent is None  # the untraced event: a new trace, rooted at its process span
        if record.topic() == topic_dlq:
            for span in (process, send):
                assert span.status.status_code is StatusCode.ERROR
                assert span.attributes["error.type"] == header_map(record.headers())["error.reason"]
        else:
            assert process.status.status_code is StatusCode.UNSET
    assert traced_outputs == GOOD + len(BAD)

    # --- batch spans link every scored event's process span
    linked = {link.context.span_id for s in otel.finished("gliclass.batch") for link in s.links}
    scored_process = {
        s.context.span_id for s in process_spans.values() if s.status.status_code is StatusCode.UNSET
    }
    assert len(scored_process) == GOOD + 1 and scored_process <= linked
    receives = otel.finished(f"receive {topic_in}")
    assert receives and all(s.kind is SpanKind.CLIENT for s in receives)
    assert {link.context.span_id for s in receives for link in s.links} == {c.span_id for c in sent.values()}
    assert sum(s.attributes["messaging.batch.message_count"] for s in receives) == GOOD + len(BAD) + 1

    # --- metrics match the traffic
    def on_input(a: Any) -> bool:
        return a.get("messaging.destination.name") == topic_in

    assert value_of(metrics, "messaging.client.consumed.messages", on_input) == GOOD + len(BAD) + 1
    assert value_of(metrics, "messaging.process.duration", on_input) == GOOD + len(BAD) + 1
    events = "messaging.process.duration"  # its count: events by outcome
    assert value_of(metrics, events, lambda a: on_input(a) and a["gliclass.outcome"] == "scored") == GOOD + 1
    assert value_of(metrics, events, lambda a: a.get("error.type") == "invalid_json") == 1
    assert value_of(metrics, events, lambda a: a.get("error.type") == "missing_text") == 1
    assert value_of(metrics, "messaging.client.sent.messages", lambda a: "error.type" not in a) == len(
        records
    )
    assert value_of(metrics, "gliclass.scheduler.batch.size") >= 1
    assert _histogram_sum(metrics, "gliclass.scheduler.batch.size") == GOOD + 1  # one pass per scored event
    assert value_of(metrics, "gliclass.scheduler.queue.duration") == GOOD + 1
    completed = value_of(metrics, "gliclass.scheduler.items", lambda a: a["gliclass.outcome"] == "completed")
    assert completed == stats.completed_items
    assert _lag_points(metrics, topic_in) == {"0": 0, "1": 0}


def record_source(record: Any) -> tuple[int, int]:
    """(partition, offset) of the input behind an output or dead-letter record."""
    headers = header_map(record.headers())
    if "error.reason" in headers:
        return int(headers["source.partition"]), int(headers["source.offset"])
    source = json.loads(record.value())["source"]
    return source["partition"], source["offset"]


def _lag_points(metrics: Any, topic: str) -> dict[str, int]:
    out = {}
    for resource_metrics in metrics.resource_metrics if metrics else ():
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "gliclass.kafka.consumer.lag":
                    for point in metric.data.data_points:
                        if point.attributes["messaging.destination.name"] == topic:
                            out[point.attributes["messaging.destination.partition.id"]] = point.value
    return out


def _histogram_sum(metrics: Any, name: str) -> float:
    total = 0.0
    for resource_metrics in metrics.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    total += sum(point.sum for point in metric.data.data_points)
    return total
