"""gRPC server spans and call metrics: a grpc.aio interceptor, outermost, continuing the caller's trace.

One SERVER span per call, named `<package.Service>/<Method>`, child of the W3C `traceparent`
(+ `tracestate`, `baggage`) the client sent in its metadata. The span is the current span while
the handler runs, so the scheduler links every batch that scores the call's items to it.

Attributes follow the current RPC semantic conventions (`rpc.system.name`, fully-qualified
`rpc.method`, `rpc.response.status_code` as the status name), plus the older `rpc.system`,
`rpc.service` and `rpc.grpc.status_code` that many backends still query. Server errors
(UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS) set the span
status to ERROR; client errors such as INVALID_ARGUMENT do not, as the conventions say.
Health checks are not traced (probes every few seconds would bury the real traffic).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gliclass_core import telemetry
from server.grpc.interceptors import Around, CallInterceptor

SKIPPED_PREFIXES = ("/grpc.health.v1.Health/",)
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class TracingInterceptor(CallInterceptor):
    """Wrap each call in a SERVER span and record `rpc.server.call.duration` (no-op when off)."""

    def around_call(self, method: str, metadata: Any) -> Around | None:
        tracer = telemetry.tracer("gliclass.server")
        metrics = telemetry.instruments()
        if (tracer is None and metrics is None) or method.startswith(SKIPPED_PREFIXES):
            return None
        return _Call(tracer, metrics, method, metadata).around


class _Call:
    """One intercepted call: its span (when tracing) and its duration (when metering)."""

    def __init__(self, tracer: Any, metrics: Any, method: str, metadata: Any) -> None:
        self.tracer, self.metrics = tracer, metrics
        self.method = method.lstrip("/")  # "gliclass.v1.Classifier/Classify"
        self.metadata = metadata

    @contextlib.asynccontextmanager
    async def around(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """The span is current while the handler runs; it ends with the status the call ends with."""
        span, token, started = self._start(context)
        code = grpc.StatusCode.OK
        try:
            yield request
        except BaseException as exc:
            code = _code_of(exc, context)
            raise
        finally:
            self._end(span, token, started, code, context)

    def _start(self, context: grpc.aio.ServicerContext) -> tuple[Any, Any, float]:
        started = time.perf_counter()
        if self.tracer is None:
            return None, None, started
        carrier = {key: value for key, value in (self.metadata or ()) if isinstance(value, str)}
        parent = propagate.extract(carrier)
        service, _, _name = self.method.rpartition("/")
        attributes: dict[str, Any] = {
            "rpc.system.name": "grpc",
            "rpc.method": self.method,
            "rpc.system": "grpc",
            "rpc.service": service,
        }
        peer = context.peer() or ""
        kind, _, rest = peer.partition(":")
        if kind in ("ipv4", "ipv6") and rest:
            host, _, port = rest.rpartition(":")
            attributes["network.peer.address"] = host.strip("[]")
            if port.isdigit():
                attributes["network.peer.port"] = int(port)
        span = self.tracer.start_span(
            self.method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token, started

    def _end(
        self, span: Any, token: Any, started: float, code: grpc.StatusCode, context: grpc.aio.ServicerContext
    ) -> None:
        if code is grpc.StatusCode.OK:
            code = _context_code(context) or code
        if self.metrics is not None:
            self.metrics.rpc_duration.record(
                time.perf_counter() - started,
                {"rpc.system.name": "grpc", "rpc.method": self.method, "rpc.response.status_code": code.name},
            )
        if span is None:
            return
        span.set_attribute("rpc.response.status_code", code.name)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in SERVER_ERRORS:
            span.set_attribute("error.type", code.name)
            span.set_status(Status(StatusCode.ERROR, _details(context)))
        span.end()
        try:
            otel_context.detach(token)
        except Exception:  # pragma: no cover - a generator finalised in another context
            pass


def _context_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    try:
        code = context.code()
    except Exception:
        return None
    return code if isinstance(code, grpc.StatusCode) else None


def _code_of(exc: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status a call that raised ends with: what `abort` set, else CANCELLED or UNKNOWN."""
    code = _context_code(context)
    if code is not None and code is not grpc.StatusCode.OK:
        return code
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _details(context: grpc.aio.ServicerContext) -> str | None:
    try:
        details = context.details()
    except Exception:
        return None
    if isinstance(details, bytes):
        return details.decode("utf-8", "replace")
    return details or None
