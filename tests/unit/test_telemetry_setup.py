"""Telemetry setup from OTEL_* variables, the JSON log format, and the scheduler's metric instruments."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from gliclass_core import telemetry
from gliclass_core.config import ConfigError
from gliclass_core.runtime import stats
from gliclass_core.telemetry import JsonFormatter, settings_from_env
from gliclass_core.telemetry.metrics import Instruments, value_of


def test_off_by_default() -> None:
    settings = settings_from_env({})
    assert not settings.enabled and settings.log_format == "text"
    assert telemetry.tracer("anything") is None and telemetry.instruments() is None


@pytest.mark.parametrize(
    ("env", "traces", "metrics", "logs"),
    [
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",), (), ()),
        (
            {"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_METRICS_EXPORTER": "none"},
            ("otlp", "console"),
            (),
            (),
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",), ("otlp",), ()),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"}, (), ("otlp",), ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, (), ("otlp",), ()),
        ({"OTEL_LOGS_EXPORTER": "otlp"}, (), (), ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, (), (), ()),
    ],
)
def test_exporters_from_env(env: dict[str, str], traces: tuple, metrics: tuple, logs: tuple) -> None:
    settings = settings_from_env(env)
    assert (settings.traces, settings.metrics, settings.logs) == (traces, metrics, logs)


def test_protocol_per_signal_defaults_to_http() -> None:
    settings = settings_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
        }
    )
    assert settings.protocol("traces") == "grpc" and settings.protocol("metrics") == "http/protobuf"
    assert settings_from_env({"OTEL_TRACES_EXPORTER": "otlp"}).protocol("traces") == "http/protobuf"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, "TRACES_PROTOCOL"),
        ({"GLICLASS_LOG_FORMAT": "xml"}, "GLICLASS_LOG_FORMAT"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        settings_from_env(env)


def _record(message: str, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("gliclass.worker", logging.WARNING, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_log_lines_carry_the_current_trace_and_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    formatter = JsonFormatter()
    with tracer.start_as_current_span("work") as span:
        line = json.loads(formatter.format(_record("scored %d events", partition=3)))
    context = span.get_span_context()
    assert line["message"] == "scored %d events" and line["level"] == "WARNING"
    assert line["logger"] == "gliclass.worker" and line["partition"] == 3
    assert line["trace_id"] == f"{context.trace_id:032x}" and line["span_id"] == f"{context.span_id:016x}"
    outside = json.loads(formatter.format(_record("no span")))
    assert "trace_id" not in outside and "span_id" not in outside


def test_json_log_lines_keep_exceptions() -> None:
    try:
        raise ValueError("broken event")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert "ValueError: broken event" in line["exception"]


@pytest.fixture
def meter() -> Any:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider.get_meter("test"), reader
    provider.shutdown()


def test_stats_observer_feeds_the_scheduler_histograms(meter: Any) -> None:
    instruments = Instruments(meter[0])
    stats.add_observer(instruments)
    try:
        recorder = stats.StatsRecorder()
        recorder.batch("cpu", 4, real=30, padded=40, queue_times=[0.001, 0.002, 0.004, 0.5])
        recorder.batch("cpu", 2, real=10, padded=10, queue_times=[0.01, 0.02])
        recorder.compute(0.03)
    finally:
        stats.remove_observer(instruments)
    recorder.batch("cpu", 8, real=1, padded=8, queue_times=[0.0] * 8)  # after removal: not seen
    data = meter[1].get_metrics_data()
    assert value_of(data, "gliclass.scheduler.batch.size") == 2
    assert value_of(data, "gliclass.scheduler.queue.duration") == 6
    assert value_of(data, "gliclass.scheduler.compute.duration") == 1
    assert value_of(data, "gliclass.scheduler.tokens", lambda a: a["gliclass.token.kind"] == "real") == 40
    assert value_of(data, "gliclass.scheduler.tokens", lambda a: a["gliclass.token.kind"] == "padding") == 10
    shares = [
        (p.sum, p.count)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "gliclass.scheduler.batch.padding_share"
        for p in m.data.data_points
    ]
    assert shares == [(pytest.approx(0.25), 2)]  # 10/40 padding, then none


def test_install_and_uninstall_switch_the_active_telemetry() -> None:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tracer_provider = TracerProvider()
    try:
        instruments = telemetry.install(tracer_provider, provider)
        assert telemetry.instruments() is instruments and telemetry.tracer("x") is not None
        assert instruments in stats._observers
        telemetry.uninstall()
        assert telemetry.instruments() is None and telemetry.tracer("x") is None
        assert instruments not in stats._observers
    finally:
        telemetry.uninstall()
        provider.shutdown()
        tracer_provider.shutdown()


def test_gpu_memory_gauge_is_empty_without_cuda(meter: Any) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: see the gpu test")
    Instruments(meter[0])
    assert value_of(meter[1].get_metrics_data(), "gliclass.gpu.memory.used") is None


@pytest.mark.gpu
def test_gpu_memory_gauge_reports_cuda_allocations(meter: Any) -> None:
    import torch

    tensor = torch.ones(1024, 1024, device="cuda")
    Instruments(meter[0])
    data = meter[1].get_metrics_data()
    allocated = value_of(
        data,
        "gliclass.gpu.memory.used",
        lambda a: a["gliclass.device"] == "cuda:0" and a["gliclass.memory.kind"] == "allocated",
    )
    assert allocated >= tensor.numel() * tensor.element_size()
