"""The process's metric instruments: scheduler, gRPC calls, Kafka events and lag, GPU memory.

Names follow the OpenTelemetry semantic conventions where one exists (`rpc.server.call.duration`,
`messaging.process.duration`, `messaging.client.consumed.messages`, `messaging.client.sent.messages`)
and use the `gliclass.` prefix otherwise. Durations are in seconds.

Scheduler histograms are fed per batch through the runtime's stats observer hook; counters by
outcome and queue depths are read from `Scheduler.stats()` of every runtime passed to
`observe_runtime`, when the metric reader collects (not on the hot path).
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

#: Bucket bounds (seconds) for latencies from sub-millisecond batches to multi-second queues.
SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SHARE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

#: Scheduler counters exported as `gliclass.scheduler.items{gliclass.outcome=...}`.
ITEM_OUTCOMES = {
    "submitted_items": "submitted",
    "completed_items": "completed",
    "failed_items": "failed",
    "expired_items": "expired",
    "cancelled_items": "cancelled",
    "rejected_items": "rejected",
}

_runtimes: weakref.WeakSet[Any] = weakref.WeakSet()
_runtimes_lock = threading.Lock()


def observe_runtime(runtime: Any) -> None:
    """Export this runtime's scheduler counters and queue depth (held weakly; call once per runtime)."""
    with _runtimes_lock:
        _runtimes.add(runtime)


def forget_runtime(runtime: Any) -> None:
    """Stop exporting this runtime's scheduler counters (tests; a stopped runtime is dropped anyway)."""
    with _runtimes_lock:
        _runtimes.discard(runtime)


def _observed_stats() -> list[Any]:
    with _runtimes_lock:
        runtimes = list(_runtimes)
    return [runtime.scheduler.stats() for runtime in runtimes]


class LagSource(Protocol):
    """Something that knows its consumer lag per (topic, partition) (the Kafka worker's tracing)."""

    group: str

    def lag(self) -> Mapping[tuple[str, int], int]: ...


class Instruments:
    """Every instrument, created on one meter; also the runtime's stats observer."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        # Scheduler: fed per batch by the runtime (see `on_batch` / `on_compute`).
        self.batch_size = meter.create_histogram(
            "gliclass.scheduler.batch.size",
            unit="{pass}",
            description="Rows (text passes) per forward batch",
            explicit_bucket_boundaries_advisory=BATCH_SIZE_BUCKETS,
        )
        self.queue_duration = meter.create_histogram(
            "gliclass.scheduler.queue.duration",
            unit="s",
            description="Time a pass waited in the scheduler queue before its batch was dispatched",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.compute_duration = meter.create_histogram(
            "gliclass.scheduler.compute.duration",
            unit="s",
            description="Wall time of one forward pass on a replica",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.padding_share = meter.create_histogram(
            "gliclass.scheduler.batch.padding_share",
            unit="1",
            description="Share of a batch's computed tokens that are padding",
            explicit_bucket_boundaries_advisory=SHARE_BUCKETS,
        )
        self.tokens = meter.create_counter(
            "gliclass.scheduler.tokens",
            unit="{token}",
            description="Tokens computed, by kind: real (text) or padding",
        )
        # Scheduler: read from stats() at collection time.
        meter.create_observable_counter(
            "gliclass.scheduler.items",
            callbacks=[self._observe_items],
            unit="{item}",
            description="Items by outcome: submitted, completed, failed, expired, cancelled, rejected",
        )
        meter.create_observable_up_down_counter(
            "gliclass.scheduler.queue.depth",
            callbacks=[self._observe_depth],
            unit="{pass}",
            description="Passes waiting in the scheduler queue, by priority",
        )
        meter.create_observable_up_down_counter(
            "gliclass.scheduler.batches.in_flight",
            callbacks=[self._observe_in_flight],
            unit="{batch}",
            description="Batches being computed right now",
        )
        meter.create_observable_gauge(
            "gliclass.gpu.memory.used",
            callbacks=[_observe_gpu_memory],
            unit="By",
            description="GPU memory held by tensors (allocated) and by the caching allocator (reserved)",
        )
        # gRPC edge (server/grpc/tracing.py).
        self.rpc_duration = meter.create_histogram(
            "rpc.server.call.duration",
            unit="s",
            description="Duration of gRPC calls handled by this server",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        # Kafka edge (worker/tracing.py).
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Records taken from input partitions",
        )
        self.sent = meter.create_counter(
            "messaging.client.sent.messages",
            unit="{message}",
            description="Output and dead-letter records the broker acknowledged (or failed)",
        )
        self.process_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Per event, consumed to output (or dead letter) queued; count by gliclass.outcome",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._lag_sources: weakref.WeakSet[LagSource] = weakref.WeakSet()
        meter.create_observable_gauge(
            "gliclass.kafka.consumer.lag",
            callbacks=[self._observe_lag],
            unit="{message}",
            description="High watermark minus the next offset to commit, per assigned partition",
        )
        meter.create_observable_gauge(
            "gliclass.kafka.partitions.stalled",
            callbacks=[self._observe_stalled],
            unit="{partition}",
            description="Partitions that cannot send: a delivery failed (re-sent in order) or a backoff",
        )

    # ------------------------------------------------------------ runtime stats observer hook

    def on_batch(self, device: str, size: int, real: int, padded: int, queue_times: Sequence[float]) -> None:
        """Record one dispatched batch (called by the scheduler's stats recorder)."""
        attributes = {"gliclass.device": device}
        self.batch_size.record(size, attributes)
        for wait in queue_times:
            self.queue_duration.record(wait, attributes)
        self.tokens.add(real, {**attributes, "gliclass.token.kind": "real"})
        self.tokens.add(padded - real, {**attributes, "gliclass.token.kind": "padding"})
        if padded:
            self.padding_share.record((padded - real) / padded, attributes)

    def on_compute(self, seconds: float) -> None:
        """Record one forward pass's wall time."""
        self.compute_duration.record(seconds)

    # ------------------------------------------------------------ observable callbacks

    def add_lag_source(self, source: LagSource) -> None:
        self._lag_sources.add(source)

    def _observe_items(self, _options: CallbackOptions) -> Iterable[Observation]:
        totals = dict.fromkeys(ITEM_OUTCOMES.values(), 0)
        for stats in _observed_stats():
            for field, outcome in ITEM_OUTCOMES.items():
                totals[outcome] += getattr(stats, field)
        return [Observation(n, {"gliclass.outcome": outcome}) for outcome, n in totals.items()]

    def _observe_depth(self, _options: CallbackOptions) -> Iterable[Observation]:
        snapshots = _observed_stats()
        interactive = sum(s.queue_depth_interactive for s in snapshots)
        bulk = sum(s.queue_depth_bulk for s in snapshots)
        return [
            Observation(interactive, {"gliclass.priority": "interactive"}),
            Observation(bulk, {"gliclass.priority": "bulk"}),
        ]

    def _observe_in_flight(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(sum(s.in_flight_batches for s in _observed_stats()))]

    def _observe_stalled(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(
                getattr(source, "stalled_partitions", 0),
                {"messaging.system": "kafka", "messaging.consumer.group.name": source.group},
            )
            for source in list(self._lag_sources)
        ]

    def _observe_lag(self, _options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for source in list(self._lag_sources):
            for (topic, partition), lag in source.lag().items():
                out.append(
                    Observation(
                        lag,
                        {
                            "messaging.system": "kafka",
                            "messaging.consumer.group.name": source.group,
                            "messaging.destination.name": topic,
                            "messaging.destination.partition.id": str(partition),
                        },
                    )
                )
        return out


def _observe_gpu_memory(_options: CallbackOptions) -> Iterable[Observation]:
    # Only when the process already uses CUDA: never import torch or initialise CUDA from here.
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    out = []
    for index in range(torch.cuda.device_count()):
        device = {"gliclass.device": f"cuda:{index}"}
        out.append(
            Observation(torch.cuda.memory_allocated(index), {**device, "gliclass.memory.kind": "allocated"})
        )
        out.append(
            Observation(torch.cuda.memory_reserved(index), {**device, "gliclass.memory.kind": "reserved"})
        )
    return out


def value_of(data: Any, name: str, where: Callable[[Mapping[str, Any]], bool] = lambda _a: True) -> Any:
    """Sum a metric's points in collected `MetricsData` (counters: value; histograms: count)."""
    total: Any = None
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    if not where(point.attributes):
                        continue
                    value = getattr(point, "value", None)
                    if value is None:
                        value = point.count
                    total = value if total is None else total + value
    return total
