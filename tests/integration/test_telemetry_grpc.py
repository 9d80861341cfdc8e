"""gRPC tracing and metrics end to end: a real server on port 0, a real client, the real model.

The client sends its trace context in metadata; the server span must continue it, the batch span
that scored the call's items must link to the server span, and the call metrics must count the
calls by status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
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
from server.proto import classifier_pb2 as pb

CLASSIFY = "gliclass.v1.Classifier/Classify"
STREAM = "gliclass.v1.Classifier/ClassifyStream"


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch, grpc_runtime: Any) -> Iterator[tuple[Any, Any, Any]]:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.install(tracer_provider, meter_provider)
    telemetry.observe_runtime(grpc_runtime)
    # The runtime's batch spans use the global tracer; a process sets that only once, so patch it.
    monkeypatch.setattr(runtime_tracing, "_tracer", tracer_provider.get_tracer("gliclass_core.runtime"))
    yield spans, reader, tracer_provider
    telemetry.forget_runtime(grpc_runtime)
    telemetry.uninstall()
    tracer_provider.shutdown()
    meter_provider.shutdown()


def _client_metadata(tracer: Any, name: str) -> tuple[Any, list[tuple[str, str]]]:
    """Start a CLIENT span and return it with the metadata that carries its context."""
    span = tracer.start_span(name, kind=SpanKind.CLIENT)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return span, list(carrier.items())


def test_server_span_continues_client_trace_and_batches_link_to_it(
    otel: tuple[Any, Any, Any], classifier_stub: Any, grpc_runtime: Any
) -> None:
    spans, reader, provider = otel
    tracer = provider.get_tracer("test-client")
    items = [
        pb.Item(id=f"t{i}", text=f"I was charged twice for order {i}", label_set="support") for i in range(3)
    ]

    client, metadata = _client_metadata(tracer, CLASSIFY)
    response = classifier_stub.Classify(pb.ClassifyRequest(items=items), metadata=metadata, timeout=30)
    client.end()
    assert [r.id for r in response.results] == ["t0", "t1", "t2"]

    bad_client, bad_metadata = _client_metadata(tracer, CLASSIFY)
    with pytest.raises(grpc.RpcError) as error:
        classifier_stub.Classify(
            pb.ClassifyRequest(items=[pb.Item(id="x", text="no labels at all")]),
            metadata=bad_metadata,
            timeout=30,
        )
    bad_client.end()
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    stream_client, stream_metadata = _client_metadata(tracer, STREAM)
    requests = iter(
        [
            pb.ClassifyStreamRequest(items=[pb.Item(id=f"s{i}", text="the app crashes", label_set="support")])
            for i in range(2)
        ]
    )
    answers = list(classifier_stub.ClassifyStream(requests, metadata=stream_metadata, timeout=30))
    stream_client.end()
    assert [a.result.id for a in answers] == ["s0", "s1"]

    finished = spans.get_finished_spans()
    servers: dict[str, list[Any]] = {CLASSIFY: [], STREAM: []}
    for s in finished:
        if s.kind is SpanKind.SERVER:
            servers[s.name].append(s)
    ok, invalid = sorted(servers[CLASSIFY], key=lambda s: s.attributes["rpc.response.status_code"] != "OK")
    (stream,) = servers[STREAM]

    for server, caller in ((ok, client), (invalid, bad_client), (stream, stream_client)):
        assert server.context.trace_id == caller.get_span_context().trace_id
        assert server.parent.span_id == caller.get_span_context().span_id
        assert server.attributes["rpc.system.name"] == "grpc" and server.attributes["rpc.system"] == "grpc"
        assert server.attributes["rpc.service"] == "gliclass.v1.Classifier"
        assert server.attributes["network.peer.address"] == "127.0.0.1"
    assert ok.attributes["rpc.method"] == CLASSIFY and ok.attributes["rpc.response.status_code"] == "OK"
    assert ok.attributes["rpc.grpc.status_code"] == 0
    assert invalid.attributes["rpc.response.status_code"] == "INVALID_ARGUMENT"
    assert invalid.status.status_code is StatusCode.UNSET  # a client error is not a server error
    assert stream.attributes["rpc.response.status_code"] == "OK"

    # The batch spans that scored the items link to the server spans of their calls.
    batches = [s for s in finished if s.name == "gliclass.batch"]
    linked_rows: dict[int, int] = {}
    for batch in batches:
        for link in batch.links:
            linked_rows[link.context.span_id] = linked_rows.get(link.context.span_id, 0) + 1
    assert ok.context.span_id in linked_rows and stream.context.span_id in linked_rows
    assert invalid.context.span_id not in linked_rows  # rejected before it was queued
    assert sum(b.attributes["gliclass.batch.size"] for b in batches) == 5

    metrics = reader.get_metrics_data()
    stats = grpc_runtime.stats()

    def calls(method: str, status: str) -> Any:
        return value_of(
            metrics,
            "rpc.server.call.duration",
            lambda a: a["rpc.method"] == method and a["rpc.response.status_code"] == status,
        )

    assert (
        calls(CLASSIFY, "OK") == 1 and calls(CLASSIFY, "INVALID_ARGUMENT") == 1 and calls(STREAM, "OK") == 1
    )
    batch_sizes = [
        p.sum
        for rm in metrics.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "gliclass.scheduler.batch.size"
        for p in m.data.data_points
    ]
    assert sum(batch_sizes) == 5  # 3 unary items + 2 stream items, one pass each
    assert value_of(metrics, "gliclass.scheduler.compute.duration") == len(batches)
    assert (
        value_of(metrics, "gliclass.scheduler.items", lambda a: a["gliclass.outcome"] == "completed")
        == stats.completed_items
    )
    assert value_of(metrics, "gliclass.scheduler.queue.depth") == 0
    real = value_of(metrics, "gliclass.scheduler.tokens", lambda a: a["gliclass.token.kind"] == "real")
    assert real == sum(b.attributes["gliclass.batch.real_tokens"] for b in batches)


def test_no_telemetry_installed_means_no_spans(classifier_stub: Any) -> None:
    # Off by default: a call with trace metadata still works and nothing is active to record it.
    assert telemetry.tracer("gliclass.server") is None and telemetry.instruments() is None
    metadata = [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    response = classifier_stub.Classify(
        pb.ClassifyRequest(items=[pb.Item(id="a", text="refund please", label_set="support")]),
        metadata=metadata,
        timeout=30,
    )
    assert response.results[0].id == "a"
