"""`telemetry.setup()` in a fresh process, exporting over real OTLP (gRPC and HTTP) to a stand-in collector.

The stand-in is this test: an OTLP/gRPC server and an OTLP/HTTP server on free loopback ports that
decode what the real exporters send with the OTLP protobuf types.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

PROBE = """
import logging
from gliclass_core import telemetry

logging.basicConfig(level=logging.INFO)
handle = telemetry.setup("default-name")
with telemetry.tracer("probe").start_as_current_span("probe-span"):
    logging.getLogger("probe").info("inside the span")
if telemetry.instruments() is not None:  # metrics may be off while traces are on
    telemetry.instruments().consumed.add(3, {"messaging.destination.name": "probe"})
handle.shutdown()
"""


class Collected:
    """What the stand-in collector received."""

    def __init__(self) -> None:
        self.traces: list[Any] = []
        self.metrics: list[Any] = []
        self.logs: list[Any] = []


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out: Collected) -> None:
        self.out = out

    def Export(self, request: Any, context: Any) -> Any:
        self.out.traces.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, out: Collected) -> None:
        self.out = out

    def Export(self, request: Any, context: Any) -> Any:
        self.out.metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, out: Collected) -> None:
        self.out = out

    def Export(self, request: Any, context: Any) -> Any:
        self.out.logs.append(request)
        return logs_service_pb2.ExportLogsServiceResponse()


@pytest.fixture
def grpc_collector() -> Iterator[tuple[str, Collected]]:
    out = Collected()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(out), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(out), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(out), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{port}", out
    server.stop(0)


@pytest.fixture
def http_collector() -> Iterator[tuple[str, Collected]]:
    out = Collected()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                out.traces.append(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                reply = trace_service_pb2.ExportTraceServiceResponse()
            elif self.path == "/v1/metrics":
                out.metrics.append(metrics_service_pb2.ExportMetricsServiceRequest.FromString(body))
                reply = metrics_service_pb2.ExportMetricsServiceResponse()
            elif self.path == "/v1/logs":
                out.logs.append(logs_service_pb2.ExportLogsServiceRequest.FromString(body))
                reply = logs_service_pb2.ExportLogsServiceResponse()
            else:
                self.send_response(404)
                self.end_headers()
                return
            payload = reply.SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", out
    server.shutdown()
    server.server_close()


def _run_probe(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, "GLICLASS_LOG_FORMAT": "json", "OTEL_METRIC_EXPORT_INTERVAL": "600000", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _log_trace_id(stderr: str) -> str:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    (line,) = [line for line in lines if line["message"] == "inside the span"]
    return str(line["trace_id"])


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_setup_exports_spans_and_metrics_over_otlp(
    protocol: str, grpc_collector: tuple[str, Collected], http_collector: tuple[str, Collected]
) -> None:
    endpoint, collected = grpc_collector if protocol == "grpc" else http_collector
    result = _run_probe(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_SERVICE_NAME": "probe-svc",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
            "OTEL_LOGS_EXPORTER": "otlp",
        }
    )
    spans = [
        (rs, span)
        for request in collected.traces
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    ((resource_spans, span),) = [(rs, s) for rs, s in spans if s.name == "probe-span"]
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "probe-svc" and resource["deployment.environment"] == "test"
    assert _log_trace_id(result.stderr) == span.trace_id.hex()  # the JSON log line names the span's trace
    points = [
        point.as_int
        for request in collected.metrics
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "messaging.client.consumed.messages"
        for point in metric.sum.data_points
    ]
    assert points and points[-1] == 3
    records = [
        record
        for request in collected.logs
        for rl in request.resource_logs
        for sl in rl.scope_logs
        for record in sl.log_records
        if record.body.string_value == "inside the span"
    ]
    assert [r.trace_id.hex() for r in records] == [span.trace_id.hex()]  # log records carry the span context


def test_setup_console_exporter_and_default_service_name() -> None:
    result = _run_probe({"OTEL_TRACES_EXPORTER": "console"})
    assert '"name": "probe-span"' in result.stdout
    assert '"service.name": "default-name"' in result.stdout
    assert len(_log_trace_id(result.stderr)) == 32


def test_setup_without_variables_exports_nothing_and_logs_plain_text() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "GLICLASS_LOG_FORMAT"}
    script = PROBE.replace(
        'telemetry.tracer("probe").start_as_current_span("probe-span")', "open(__import__('os').devnull)"
    ).replace("handle.shutdown()", "assert telemetry.tracer('probe') is None and not handle.enabled")
    result = subprocess.run(
        [sys.executable, "-c", script], env=clean, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == "" and "INFO:probe:inside the span" in result.stderr


SERVE_CONFIG = """
[model]
id = "builtin:minilm"
device = "cpu"

[label_sets.support]
labels = ["billing", "bug report", "feature request"]

[grpc]
address = "127.0.0.1:0"
"""


def test_serve_command_exports_a_calls_trace_with_its_batch(
    grpc_collector: tuple[str, Collected], tmp_path: Any
) -> None:
    """`gliclass-stream serve` sets the SDK up from OTEL_* and flushes it on SIGTERM."""
    import queue
    import signal
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from server.proto import classifier_pb2 as pb
    from server.proto import classifier_pb2_grpc

    endpoint, collected = grpc_collector
    config = tmp_path / "gliclass.toml"
    config.write_text(SERVE_CONFIG, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLICLASS_", "OTEL_"))}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_SERVICE_NAME="serve-under-test",
        OTEL_METRIC_EXPORT_INTERVAL="600000",  # metrics leave at shutdown: the flush is what is tested
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.app.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    try:
        address = None
        end = time.monotonic() + 120
        while address is None and time.monotonic() < end and proc.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if "listening on" in line:
                address = line.rsplit(" ", 1)[-1].strip()
        assert address, f"serve did not report its address (exit {proc.poll()})"
        trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while health.Check(health_pb2.HealthCheckRequest(), timeout=10).status != 1:  # SERVING
                assert time.monotonic() < end and proc.poll() is None, "serve never became SERVING"
                time.sleep(0.2)
            response = classifier_pb2_grpc.ClassifierStub(channel).Classify(
                pb.ClassifyRequest(items=[pb.Item(id="a", text="charged twice", label_set="support")]),
                metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")],
                timeout=60,
            )
        assert response.results[0].id == "a"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    spans = [
        (rs, span)
        for request in collected.traces
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    ((resource_spans, server),) = [(rs, s) for rs, s in spans if s.name == "gliclass.v1.Classifier/Classify"]
    assert server.trace_id.hex() == trace_id and server.parent_span_id.hex() == parent_id
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "serve-under-test"
    batches = [s for _, s in spans if s.name == "gliclass.batch"]  # via the global tracer provider
    assert any(link.span_id == server.span_id for batch in batches for link in batch.links)
    exported_metrics = {
        metric.name
        for request in collected.metrics
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    assert {"rpc.server.call.duration", "gliclass.scheduler.batch.size", "gliclass.scheduler.items"} <= (
        exported_metrics
    )
    # The process figures go over OTLP as they go to /metrics (one meter provider feeds both).
    assert {
        "process.memory.usage",
        "process.cpu.time",
        "process.open_file_descriptor.count",
    } <= exported_metrics
    assert {"gliclass.ready", "gliclass.scheduler.compute.duration"} <= exported_metrics
