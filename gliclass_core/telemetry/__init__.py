"""OpenTelemetry for gliclass-stream: SDK setup from OTEL_* variables, the process's instruments, JSON logs.

Off by default. `setup()` (called once by the `serve` / `worker` / `dev` commands) turns traces,
metrics and logs on when the standard variables name an exporter (`OTEL_TRACES_EXPORTER=otlp`,
`OTEL_METRICS_EXPORTER=console`, or just `OTEL_EXPORTER_OTLP_ENDPOINT`). While off, `tracer()` and
`instruments()` return None and every hook in the edges returns after one attribute read.

The core never imports an edge: the gRPC interceptor lives in `server/grpc/tracing.py`, the Kafka spans
in `worker/tracing.py`; both read the active tracer and instruments from here.
"""

from __future__ import annotations

from gliclass_core.telemetry.logs import JsonFormatter, configure_logging
from gliclass_core.telemetry.metrics import Instruments, forget_runtime, observe_runtime
from gliclass_core.telemetry.setup import (
    Telemetry,
    TelemetrySettings,
    install,
    instruments,
    settings_from_env,
    setup,
    tracer,
    uninstall,
)

__all__ = [
    "Instruments",
    "JsonFormatter",
    "Telemetry",
    "TelemetrySettings",
    "configure_logging",
    "forget_runtime",
    "install",
    "instruments",
    "observe_runtime",
    "settings_from_env",
    "setup",
    "tracer",
    "uninstall",
]
