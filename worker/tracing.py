"""Kafka spans and metrics for the worker loop, following the messaging semantic conventions.

Per poll that returned records: a `receive` CLIENT span linked to each record's producer context.
Per record: a `process <topic>` CONSUMER span whose parent is the W3C context in the record's
`traceparent` header (a new trace when there is none), linked from the batch span that scored it.
Per output: a `send <topic>` PRODUCER span, child of the process span, whose context replaces the
`traceparent` / `tracestate` headers of the output (or dead-letter) record and which ends when
the broker acknowledges it. Dead letters mark the process and send spans as errors with the reason.

Everything is keyed by the loop's slot objects (weakly: abandoned work leaves nothing behind).
While telemetry is off (`setup` found no exporter) every hook returns after one attribute test.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from gliclass_core import telemetry
from gliclass_core.telemetry.backlog import Backlog, BacklogEstimator

TP = tuple[str, int]
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
#: How often consumer lag is recomputed from the cached high watermarks (seconds).
LAG_INTERVAL_S = 1.0
#: Links per receive span (the SDK's default span link limit; more would be built and dropped).
MAX_RECEIVE_LINKS = 128


@dataclass(eq=False)
class _SlotSpans:
    process: Any
    started: float
    send: Any = None
    topic: str | None = None
    finished: bool = False


def _carrier(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The W3C propagation headers of a record as strings (other headers are not read)."""
    out = {}
    for key, value in headers or ():
        if key in TRACE_HEADERS or key == "baggage":
            out[key] = (value or b"").decode("latin-1")
    return out


class WorkerTracing:
    """The worker loop's telemetry hooks; construct after `telemetry.setup()` (or `install`)."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._tracer = telemetry.tracer("gliclass.worker")
        self._metrics = telemetry.instruments()
        self.enabled = self._tracer is not None or self._metrics is not None
        self._slots: weakref.WeakKeyDictionary[Any, _SlotSpans] = weakref.WeakKeyDictionary()
        self._parents: dict[int, Context] = {}
        self._receive_context: SpanContext | None = None
        self._lag: dict[TP, int] = {}
        self._lag_at = 0.0
        self._backlog = BacklogEstimator()
        self._backlog_view: dict[str, Backlog] = {}
        self._start: dict[TP, int] = {}  # where an assigned partition without a position starts
        #: Partitions that could not send at the last loop step (the stalled-partitions gauge).
        self.stalled_partitions = 0
        self._sent: dict[tuple[str | None, str | None], int] = {}  # (topic, error) -> acks not yet counted
        if self._metrics is not None:
            self._metrics.add_lag_source(self)

    # ------------------------------------------------------------------ consume

    def poll(self, consumer: Any, tracker: Any, max_records: int, timeout: float) -> list[Any]:
        """Poll through `consumer.poll_batch`, with a receive span for a non-empty batch."""
        if not self.enabled:
            return list(consumer.poll_batch(max_records, timeout))
        started = time.time_ns()
        msgs = list(consumer.poll_batch(max_records, timeout))
        if self._metrics is not None:
            self._count(msgs)
            if time.monotonic() - self._lag_at >= LAG_INTERVAL_S:
                self._update_lag(consumer, tracker)
        self._parents.clear()
        self._receive_context = None
        if not msgs or self._tracer is None:
            return msgs
        links: list[trace.Link] = []
        for msg in msgs:
            parent = propagate.extract(_carrier(msg.headers()))
            self._parents[id(msg)] = parent
            context = trace.get_current_span(parent).get_span_context()
            if context.is_valid and len(links) < MAX_RECEIVE_LINKS:
                links.append(Link(context))
        topics = {msg.topic() for msg in msgs}
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "receive",
            "messaging.operation.name": "receive",
            "messaging.consumer.group.name": self.group,
            "messaging.batch.message_count": len(msgs),
        }
        name = "receive"
        if len(topics) == 1:
            (topic,) = topics
            attributes["messaging.destination.name"] = topic
            name = f"receive {topic}"
        span = self._tracer.start_span(
            name,
            context=Context(),
            kind=SpanKind.CLIENT,
            links=links,
            attributes=attributes,
            start_time=started,
        )
        span.end()
        self._receive_context = span.get_span_context()
        return msgs

    def accepted(self, slot: Any, msg: Any) -> None:
        """Start the record's process span, continuing the producer's trace."""
        if not self.enabled:
            return
        topic, partition = slot.tp
        span = None
        if self._tracer is not None:
            parent = self._parents.pop(id(msg), None)
            if parent is None:
                parent = propagate.extract(_carrier(msg.headers()))
            attributes: dict[str, Any] = {
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(partition),
                "messaging.consumer.group.name": self.group,
                "messaging.kafka.offset": slot.offset,
            }
            if slot.key is not None:
                attributes["messaging.kafka.message.key"] = slot.key.decode("utf-8", "replace")
            if slot.value is None:
                attributes["messaging.kafka.message.tombstone"] = True
            else:
                attributes["messaging.message.body.size"] = len(slot.value)
            links = [Link(self._receive_context)] if self._receive_context is not None else None
            span = self._tracer.start_span(
                f"process {topic}", context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes
            )
        self._slots[slot] = _SlotSpans(span, time.monotonic())

    def span_contexts(self, slots: Sequence[Any]) -> list[SpanContext | None] | None:
        """Each slot's process span context, for the scheduler's batch links (None when not tracing)."""
        if self._tracer is None:
            return None
        out: list[SpanContext | None] = []
        for slot in slots:
            spans = self._slots.get(slot)
            out.append(spans.process.get_span_context() if spans is not None and spans.process else None)
        return out

    # ------------------------------------------------------------------ produce

    def sending(self, slot: Any, topic: str, headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """Open (or reuse) the slot's send span; return the headers carrying its context."""
        if not self.enabled:
            return headers
        spans = self._slots.get(slot)
        if spans is None:
            spans = self._slots[slot] = _SlotSpans(None, time.monotonic())
        spans.topic = topic
        if self._tracer is None:
            return headers
        if spans.send is None:
            parent = trace.set_span_in_context(spans.process) if spans.process is not None else Context()
            attributes: dict[str, Any] = {
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": topic,
            }
            if slot.key is not None:
                attributes["messaging.kafka.message.key"] = slot.key.decode("utf-8", "replace")
            spans.send = self._tracer.start_span(
                f"send {topic}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
            )
            if slot.bad is not None:
                _mark_dead_letter(spans.send, slot.bad)
                if spans.process is not None:
                    _mark_dead_letter(spans.process, slot.bad)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(spans.send))
        kept = [(k, v) for k, v in headers if k not in TRACE_HEADERS]
        return kept + [(k, v.encode("latin-1")) for k, v in carrier.items() if k in TRACE_HEADERS]

    def sent(self, slot: Any) -> None:
        """The output (or dead letter) is queued: end the process span and count the event."""
        if not self.enabled:
            return
        spans = self._slots.get(slot)
        if spans is None or spans.finished:
            return
        spans.finished = True
        if spans.process is not None:
            spans.process.end()
        if self._metrics is not None:
            attributes: dict[str, Any] = {
                "messaging.system": "kafka",
                "messaging.operation.name": "process",
                "messaging.destination.name": slot.tp[0],
                "messaging.consumer.group.name": self.group,
                "gliclass.outcome": "scored" if slot.bad is None else "dead_lettered",
            }
            if slot.bad is not None:
                attributes["error.type"] = slot.bad.reason
            # Its count is also the events-by-outcome counter: one metric operation per event.
            self._metrics.process_duration.record(time.monotonic() - spans.started, attributes)

    def delivered(self, slot: Any, err: Any) -> None:
        """The broker answered for the slot's output: end its send span (an error when delivery failed)."""
        if not self.enabled:
            return
        spans = self._slots.get(slot)
        if spans is None:
            return
        if self._metrics is not None:  # counted in bulk on the next poll
            key = (spans.topic, None if err is None else _error_name(err))
            self._sent[key] = self._sent.get(key, 0) + 1
        send, spans.send = spans.send, None
        if send is None:
            return
        if err is not None:
            send.set_attribute("error.type", _error_name(err))
            send.set_status(Status(StatusCode.ERROR, str(err)))
        send.end()

    # ------------------------------------------------------------------ counters, lag

    def _count(self, msgs: list[Any]) -> None:
        """Add the records of one poll, and the acks since the last one, per partition / topic."""
        assert self._metrics is not None
        received: dict[tuple[str | None, int | None], int] = {}
        for msg in msgs:
            tp = (msg.topic(), msg.partition())
            received[tp] = received.get(tp, 0) + 1
        for (topic, partition), n in received.items():
            self._metrics.consumed.add(
                n,
                {
                    "messaging.system": "kafka",
                    "messaging.operation.name": "receive",
                    "messaging.destination.name": topic,
                    "messaging.destination.partition.id": str(partition),
                    "messaging.consumer.group.name": self.group,
                },
            )
        sent, self._sent = self._sent, {}
        for (topic, error), n in sent.items():
            attributes: dict[str, Any] = {"messaging.system": "kafka", "messaging.operation.name": "send"}
            if topic:
                attributes["messaging.destination.name"] = topic
            if error:
                attributes["error.type"] = error
            self._metrics.sent.add(n, attributes)

    def lag(self) -> Mapping[TP, int]:
        """The last computed lag per partition (read by the metric reader's thread)."""
        return self._lag

    def backlog(self) -> Mapping[str, Backlog]:
        """The last computed backlog figures per input topic (read by the metric reader's thread)."""
        return self._backlog_view

    def predicted(self, route: str, label_set: str | None, prediction: Any) -> None:
        """Count a scored event's labels and top label (the collapse alarm's input)."""
        if self._metrics is not None:
            self._metrics.predicted(route, label_set, prediction.labels, prediction.scores)

    def dead_lettered(self, route: str, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.dead_lettered(route, reason)

    def _update_lag(self, consumer: Any, tracker: Any) -> None:
        # Runs on the loop thread: the consumer is not shared with the metric reader's thread.
        now = self._lag_at = time.monotonic()
        positions = dict(tracker.positions())
        assigned = consumer.assignment()
        self._start = {tp: offset for tp, offset in self._start.items() if tp in assigned}
        # A partition counts from its assignment, before its first record: from the group's
        # committed offset, else from the low watermark (auto.offset.reset is earliest).
        missing = [tp for tp in assigned if tp not in positions and tp not in self._start]
        if missing:  # asked once per assignment; -1: the group has no committed offset there
            try:
                committed = consumer.committed(missing, timeout=1.0)
            except Exception:  # a slow broker: count from the low watermark instead
                committed = {}
            self._start.update({tp: committed.get(tp, -1) for tp in missing})
        for tp in assigned:
            if tp not in positions:
                start: int | None = self._start.get(tp, -1)
                if start is None or start < 0:
                    start = consumer.low_watermark(tp)
                if start is not None:
                    positions[tp] = start
        lag, highs = {}, {}
        for tp, position in positions.items():
            high = consumer.high_watermark(tp)
            if high is not None:
                highs[tp] = high
                lag[tp] = max(0, high - position)
        self._lag = lag  # replaced whole: readers never see a half-built dict
        self._backlog.observe(now, {tp: positions[tp] for tp in lag}, highs)
        self._backlog_view = self._backlog.routes()


def _mark_dead_letter(span: Any, bad: Any) -> None:
    span.set_attribute("error.type", bad.reason)
    span.set_attribute("gliclass.dead_letter.reason", bad.reason)
    span.set_status(Status(StatusCode.ERROR, f"{bad.reason}: {bad.message}"[:500]))


def _error_name(err: Any) -> str:
    name: Callable[[], str] | None = getattr(err, "name", None)
    try:
        return str(name()) if callable(name) else str(err)
    except Exception:
        return str(err)
