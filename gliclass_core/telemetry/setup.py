"""SDK setup from the standard OTEL_* environment variables, and the process's active telemetry.

A signal is on when `OTEL_<SIGNAL>_EXPORTER` names exporters (`otlp`, `console`, comma-separated;
`none` is off) or, with that variable unset, when an OTLP endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`). Unlike the SDK's own
auto-configuration, nothing is on by default. `OTEL_SDK_DISABLED=true` turns everything off.

Everything else is read by the SDK and the exporters themselves: `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`,
`OTEL_EXPORTER_OTLP_(<SIGNAL>_)ENDPOINT/HEADERS/TIMEOUT/COMPRESSION/CERTIFICATE`. The OTLP protocol
(`OTEL_EXPORTER_OTLP_(<SIGNAL>_)PROTOCOL`: `grpc` or `http/protobuf`) defaults to `http/protobuf`,
as the specification says.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Tracer

from gliclass_core.config import ConfigError
from gliclass_core.telemetry.logs import configure_logging
from gliclass_core.telemetry.metrics import Instruments

log = logging.getLogger(__name__)

EXPORTERS = ("otlp", "console")
PROTOCOLS = ("grpc", "http/protobuf")
SIGNALS = ("traces", "metrics", "logs")
DEFAULT_SERVICE_NAME = "gliclass-stream"


@dataclass(frozen=True)
class TelemetrySettings:
    """Which exporters each signal uses (empty: off), the OTLP protocol per signal, the log format."""

    traces: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    logs: tuple[str, ...] = ()
    protocols: tuple[tuple[str, str], ...] = ()
    log_format: str = "text"

    @property
    def enabled(self) -> bool:
        return bool(self.traces or self.metrics or self.logs)

    def protocol(self, signal: str) -> str:
        return dict(self.protocols).get(signal, "http/protobuf")


def settings_from_env(env: Mapping[str, str] | None = None) -> TelemetrySettings:
    """Read the OTEL_* variables (and GLICLASS_LOG_FORMAT); raise ConfigError naming a bad value."""
    env = os.environ if env is None else env
    log_format = env.get("GLICLASS_LOG_FORMAT", "text").strip().lower() or "text"
    if log_format not in ("text", "json"):
        raise ConfigError(f"GLICLASS_LOG_FORMAT must be 'text' or 'json', not {log_format!r}")
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TelemetrySettings(log_format=log_format)
    chosen: dict[str, tuple[str, ...]] = {}
    protocols = []
    any_endpoint = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    for signal in SIGNALS:
        upper = signal.upper()
        variable = f"OTEL_{upper}_EXPORTER"
        raw = env.get(variable)
        if raw is None:
            on = any_endpoint or bool(env.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT"))
            # Logs stay off without an explicit exporter: they already go to stderr.
            names: tuple[str, ...] = ("otlp",) if on and signal != "logs" else ()
        else:
            names = tuple(dict.fromkeys(n.strip().lower() for n in raw.split(",") if n.strip()))
            names = tuple(n for n in names if n != "none")
            unknown = [n for n in names if n not in EXPORTERS]
            if unknown:
                raise ConfigError(
                    f"{variable}: unknown exporter {unknown[0]!r} (use {', '.join(EXPORTERS)} or none)"
                )
        chosen[signal] = names
        protocol_variable = f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"
        protocol = env.get(protocol_variable) or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        protocol = protocol.strip().lower()
        if "otlp" in names and protocol not in PROTOCOLS:
            raise ConfigError(
                f"{protocol_variable if env.get(protocol_variable) else 'OTEL_EXPORTER_OTLP_PROTOCOL'}: "
                f"unsupported protocol {protocol!r} (use grpc or http/protobuf)"
            )
        protocols.append((signal, protocol))
    return TelemetrySettings(
        chosen["traces"], chosen["metrics"], chosen["logs"], tuple(protocols), log_format
    )


# ----------------------------------------------------------------------------- active state


@dataclass
class _Active:
    tracer_provider: Any = None
    instruments: Instruments | None = None
    tracers: dict[str, Tracer] | None = None


_active = _Active()
_lock = threading.Lock()


def tracer(name: str) -> Tracer | None:
    """The active tracer for an instrumentation scope, or None while tracing is off."""
    provider = _active.tracer_provider
    if provider is None:
        return None
    tracers = _active.tracers
    if tracers is None:
        return None
    found = tracers.get(name)
    if found is None:
        found = tracers[name] = provider.get_tracer(name)
    return found


def instruments() -> Instruments | None:
    """The active metric instruments, or None while metrics are off."""
    return _active.instruments


def install(tracer_provider: Any = None, meter_provider: Any = None) -> Instruments | None:
    """Make these providers the ones gliclass code reports to (tests pass in-memory ones).

    Does not touch the OpenTelemetry globals (`setup` does): a process sets those only once.
    """
    from gliclass_core.runtime import stats

    with _lock:
        _uninstall_locked()
        _active.tracer_provider = tracer_provider
        _active.tracers = {} if tracer_provider is not None else None
        if meter_provider is not None:
            _active.instruments = Instruments(meter_provider.get_meter("gliclass"))
            stats.add_observer(_active.instruments)
            _process_metrics(meter_provider)
        return _active.instruments


#: The process figures exported through `opentelemetry-instrumentation-system-metrics` (names as
#: in the semantic conventions: `process.memory.usage` is the resident set size).
PROCESS_METRICS: dict[str, list[str] | None] = {
    "process.memory.usage": None,
    "process.memory.virtual": None,
    "process.cpu.time": ["user", "system"],
    "process.open_file_descriptor.count": None,
    "process.thread.count": None,
}


def _process_metrics(meter_provider: Any) -> None:
    """Register resident memory, CPU seconds, open fds and threads on this meter provider."""
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    # The instrumentor is a process-wide singleton that registers once; each meter provider (a
    # process has one, tests build several) gets its own instruments, so reset its flag first.
    instrumentor = SystemMetricsInstrumentor(config=PROCESS_METRICS)
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()  # its _uninstrument is a no-op: the old provider keeps its own
    instrumentor.instrument(meter_provider=meter_provider)


def uninstall() -> None:
    """Stop reporting to the installed providers (their shutdown is the caller's)."""
    with _lock:
        _uninstall_locked()


def _uninstall_locked() -> None:
    from gliclass_core.runtime import stats

    if _active.instruments is not None:
        stats.remove_observer(_active.instruments)
    _active.tracer_provider = None
    _active.tracers = None
    _active.instruments = None


# ----------------------------------------------------------------------------- setup


class Telemetry:
    """What `setup` configured; `shutdown()` flushes and stops the exporters."""

    def __init__(
        self,
        settings: TelemetrySettings,
        tracer_provider: Any,
        meter_provider: Any,
        logger_provider: Any,
        prometheus_registry: Any = None,
    ):
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.logger_provider = logger_provider
        #: The `prometheus_client` registry the Prometheus reader fills (None unless asked for).
        self.prometheus_registry = prometheus_registry

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def shutdown(self) -> None:
        """Flush what is buffered and stop the exporters (safe to call more than once)."""
        uninstall()
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception as exc:  # exporting is best effort; shutdown must not fail
                    log.warning("telemetry shutdown: %s", exc)
        self.tracer_provider = self.meter_provider = self.logger_provider = None


def setup(
    service_name: str = DEFAULT_SERVICE_NAME,
    env: Mapping[str, str] | None = None,
    *,
    prometheus: bool = False,
) -> Telemetry:
    """Configure logging and, when the environment asks for it, the OTel SDK; call once per process.

    `service_name` is the default when OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES name none.
    `prometheus`: also (or only) collect metrics for a Prometheus scrape, through the SDK's
    Prometheus reader on the same meter provider as the OTLP reader (`Telemetry.prometheus_registry`).
    Raises ConfigError for a bad variable, before anything is started.
    """
    from gliclass_core.telemetry.collapse import from_env

    settings = settings_from_env(env)
    top_labels = from_env(os.environ if env is None else env)  # a bad value fails before anything starts
    configure_logging(settings.log_format)
    if not settings.enabled and not prometheus:
        return Telemetry(settings, None, None, None)
    from opentelemetry import metrics, trace

    resource = _resource(service_name)
    tracer_provider = meter_provider = logger_provider = None
    if settings.traces:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
        for name in settings.traces:
            tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter(name, settings)))
        trace.set_tracer_provider(tracer_provider)  # the runtime's batch spans use the global one
    registry = None
    if settings.metrics or prometheus:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

        readers: list[MetricReader] = [
            PeriodicExportingMetricReader(_metric_exporter(n, settings)) for n in settings.metrics
        ]
        if prometheus:
            scope = (env if env is not None else os.environ).get("GLICLASS_PROMETHEUS_SCOPE_LABELS", "")
            registry, reader = prometheus_reader(scope_labels=scope.strip().lower() == "true")
            readers.append(reader)
        meter_provider = MeterProvider(metric_readers=readers, resource=resource)
        metrics.set_meter_provider(meter_provider)
    if settings.logs:
        logger_provider = _logs(settings, resource)
    instruments = install(tracer_provider, meter_provider)
    if instruments is not None:
        instruments.top_labels = top_labels
    log.info(
        "telemetry on: traces=%s metrics=%s logs=%s (service %s)",
        ",".join(settings.traces) or "off",
        ",".join((*settings.metrics, *(("prometheus",) if prometheus else ()))) or "off",
        ",".join(settings.logs) or "off",
        resource.attributes.get("service.name"),
    )
    return Telemetry(settings, tracer_provider, meter_provider, logger_provider, registry)


def prometheus_reader(scope_labels: bool = False) -> tuple[Any, Any]:
    """A Prometheus metric reader and the private `prometheus_client` registry it fills.

    A private registry (not prometheus_client's global one), so a process or a test can build
    several without name clashes; a scrape renders it with `prometheus_client.generate_latest`.
    `scope_labels`: add the three `otel_scope_*` labels to every series (off: they only name the
    instrumentation library; `GLICLASS_PROMETHEUS_SCOPE_LABELS=true` turns them on for `serve`).
    """
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=True)
    return registry, PrometheusMetricReader(registry=registry, scope_info_enabled=scope_labels)


def _resource(service_name: str) -> Any:
    from importlib.metadata import PackageNotFoundError, version

    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
    extra: dict[str, str] = {}
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        extra[SERVICE_NAME] = service_name
    if SERVICE_VERSION not in resource.attributes:
        try:
            extra[SERVICE_VERSION] = version("gliclass-stream")
        except PackageNotFoundError:
            pass
    return resource.merge(Resource(extra)) if extra else resource


def _span_exporter(name: str, settings: TelemetrySettings) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if settings.protocol("traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
    return OTLPSpanExporter()


def _metric_exporter(name: str, settings: TelemetrySettings) -> Any:
    if name == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    if settings.protocol("metrics") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # type: ignore[assignment]
    return OTLPMetricExporter()


def _logs(settings: TelemetrySettings, resource: Any) -> Any:
    """Send log records (with their trace context) to the log exporters via a root-logger handler."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    from gliclass_core.telemetry.logs import OtelLogHandler

    provider = LoggerProvider(resource=resource)
    for name in settings.logs:
        if name == "console":
            from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

            exporter: Any = ConsoleLogRecordExporter()
        elif settings.protocol("logs") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

            exporter = OTLPLogExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # type: ignore[assignment]

            exporter = OTLPLogExporter()
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logging.getLogger().addHandler(OtelLogHandler(provider))
    return provider
