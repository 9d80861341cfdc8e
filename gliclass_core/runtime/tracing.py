"""OpenTelemetry for the scheduler: per-item span contexts in, one linked span per batch out.

Only `opentelemetry-api` is used; the SDK (exporters, sampling) is configured by the process.
With no SDK the tracer is a no-op: no links are built (no valid contexts exist) and no
attributes are computed (the span is not recording), so the cost is a few microseconds a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind

_tracer = trace.get_tracer("gliclass_core.runtime")


def capture_span_context() -> SpanContext | None:
    """Return the caller's current span context, or None when there is no valid one."""
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


@contextmanager
def batch_span(
    contexts: Iterable[SpanContext | None],
    *,
    size: int,
    real_tokens: int,
    padded_tokens: int,
    device: str,
    queue_wait_s: float,
    priority: str,
) -> Iterator[trace.Span]:
    """Open the span of one forward batch, linked to the span of every item in it."""
    seen: set[tuple[int, int]] = set()
    links = []
    for context in contexts:
        if context is not None and (context.trace_id, context.span_id) not in seen:
            seen.add((context.trace_id, context.span_id))
            links.append(Link(context))
    with _tracer.start_as_current_span("gliclass.batch", kind=SpanKind.INTERNAL, links=links) as span:
        if span.is_recording():
            span.set_attributes(
                {
                    "gliclass.batch.size": size,
                    "gliclass.batch.real_tokens": real_tokens,
                    "gliclass.batch.padded_tokens": padded_tokens,
                    "gliclass.batch.device": device,
                    "gliclass.batch.queue_wait_ms": queue_wait_s * 1000.0,
                    "gliclass.batch.priority": priority,
                }
            )
        yield span
