"""The process's metric instruments: scheduler, gRPC calls, Kafka events and lag, GPU memory
(streaming sessions' in `session_metrics`).

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
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from gliclass_core.telemetry.backlog import Backlog
from gliclass_core.telemetry.collapse import OTHER, TopLabelShare, top_label
from gliclass_core.telemetry.session_metrics import SessionInstruments

if TYPE_CHECKING:
    from gliclass_core.service import ClassifyService

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

_runtimes: weakref.WeakSet[ClassifyService] = weakref.WeakSet()
_runtimes_lock = threading.Lock()


def observe_runtime(runtime: ClassifyService) -> None:
    """Export this runtime's scheduler counters and queue depth (held weakly; call once per runtime)."""
    with _runtimes_lock:
        _runtimes.add(runtime)


def forget_runtime(runtime: ClassifyService) -> None:
    """Stop exporting this runtime's scheduler counters (tests; a stopped runtime is dropped anyway)."""
    with _runtimes_lock:
        _runtimes.discard(runtime)


def _observed_runtimes() -> list[Any]:
    with _runtimes_lock:
        return list(_runtimes)


def _stats_by_device() -> dict[str, list[Any]]:
    """Scheduler stats per runtime, keyed by the devices its replicas run on ("cpu", "cuda:0,cuda:1")."""
    out: dict[str, list[Any]] = {}
    for runtime in _observed_runtimes():
        specs = getattr(getattr(runtime, "pool", None), "specs", ())
        device = ",".join(str(spec.device) for spec in specs) or "unknown"
        out.setdefault(device, []).append(runtime.stats())
    return out


def _observe_ready(_options: CallbackOptions) -> Iterable[Observation]:
    runtimes = _observed_runtimes()
    return [Observation(int(all(bool(r.ready) for r in runtimes)))] if runtimes else []


def _observe_replica_restarts(_options: CallbackOptions) -> Iterable[Observation]:
    restarts: dict[str, int] = {}
    for runtime in _observed_runtimes():
        pool = getattr(runtime, "pool", None)
        for replica in list(getattr(pool, "replicas", ())):
            device = str(getattr(replica, "device", ""))
            restarts[device] = restarts.get(device, 0) + int(getattr(replica, "faults", 0))
    return [Observation(n, {"gliclass.device": device}) for device, n in sorted(restarts.items())]


class LagSource(Protocol):
    """Something that knows its consumer lag per (topic, partition) (the Kafka worker's tracing)."""

    group: str

    def lag(self) -> Mapping[tuple[str, int], int]: ...

    def backlog(self) -> Mapping[str, Backlog]: ...


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
            "gliclass.ready",
            callbacks=[_observe_ready],
            unit="1",
            description="1 while the model pool is warm and accepting work, else 0",
        )
        meter.create_observable_counter(
            "gliclass.replica.restarts",
            callbacks=[_observe_replica_restarts],
            unit="{restart}",
            description="Times a replica's loop restarted after a fault outside a batch, by device",
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
            "gliclass.kafka.backlog.duration",
            callbacks=[self._observe_backlog],
            unit="s",
            description="Per route: lag over the drain rate of the last minute (see the docs' definition)",
        )
        meter.create_observable_gauge(
            "gliclass.kafka.backlog.drain_time",
            callbacks=[self._observe_drain_time],
            unit="s",
            description="Per route: lag over (drain rate - arrival rate); absent while the lag grows",
        )
        self.predicted_labels = meter.create_counter(
            "gliclass.predicted.labels",
            unit="{label}",
            description="Predicted labels per route and label set (inline labels count as 'other')",
        )
        self.dead_letters = meter.create_counter(
            "gliclass.dead_letters",
            unit="{message}",
            description="Records sent to a dead-letter topic, by route and reason",
        )
        #: Top-label shares per route and label set: the collapse alarm's figure.
        self.top_labels = TopLabelShare()
        meter.create_observable_gauge(
            "gliclass.predictions.top_label.share",
            callbacks=[self._observe_share],
            unit="1",
            description="Share of the most frequent top label in the last 5 minutes, per route and label set",
        )
        meter.create_observable_gauge(
            "gliclass.predictions.top_label.share_change",
            callbacks=[self._observe_share_change],
            unit="1",
            description="That share minus the same label's share over the hour before the window",
        )
        meter.create_observable_gauge(
            "gliclass.kafka.partitions.stalled",
            callbacks=[self._observe_stalled],
            unit="{partition}",
            description="Partitions that cannot send: a delivery failed (re-sent in order) or a backoff",
        )
        self.sessions = SessionInstruments(meter, _observed_runtimes)

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

    def on_compute(self, seconds: float, device: str = "") -> None:
        """Record one forward pass's wall time on `device`."""
        self.compute_duration.record(seconds, {"gliclass.device": device})

    # ------------------------------------------------------------ Kafka worker hooks

    def predicted(
        self, route: str, label_set: str | None, labels: Sequence[str], scores: Mapping[str, float]
    ) -> None:
        """Count one scored event's predicted labels and its top label (bounded: see module doc)."""
        name = label_set or "inline"
        for label in labels:
            self.predicted_labels.add(
                1,
                {
                    "gliclass.route": route,
                    "gliclass.label_set": name,
                    "gliclass.label": label if label_set else OTHER,
                },
            )
        top = top_label(dict(scores))
        if top is not None:
            self.top_labels.add(route, name, top if label_set else OTHER)

    def dead_lettered(self, route: str, reason: str) -> None:
        """Count one record sent to the route's dead-letter topic."""
        self.dead_letters.add(1, {"gliclass.route": route, "gliclass.dead_letter.reason": reason})

    # ------------------------------------------------------------ observable callbacks

    def add_lag_source(self, source: LagSource) -> None:
        self._lag_sources.add(source)

    def _observe_items(self, _options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for device, snapshots in _stats_by_device().items():
            for field, outcome in ITEM_OUTCOMES.items():
                n = sum(getattr(stats, field) for stats in snapshots)
                out.append(Observation(n, {"gliclass.outcome": outcome, "gliclass.device": device}))
        return out

    def _observe_depth(self, _options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for device, snapshots in _stats_by_device().items():
            for priority in ("interactive", "bulk"):
                n = sum(getattr(s, f"queue_depth_{priority}") for s in snapshots)
                out.append(Observation(n, {"gliclass.priority": priority, "gliclass.device": device}))
        return out

    def _observe_in_flight(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(sum(s.in_flight_batches for s in snapshots), {"gliclass.device": device})
            for device, snapshots in _stats_by_device().items()
        ]

    def _backlogs(self) -> list[tuple[str, str, Backlog]]:
        out: list[tuple[str, str, Backlog]] = []
        for source in list(self._lag_sources):
            backlog = getattr(source, "backlog", None)
            if backlog is not None:
                out.extend((source.group, topic, b) for topic, b in backlog().items())
        return out

    def _observe_backlog(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(b.seconds, _route_attributes(group, topic)) for group, topic, b in self._backlogs()
        ]

    def _observe_drain_time(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(b.drain_time_s, _route_attributes(group, topic))
            for group, topic, b in self._backlogs()
            if b.drain_time_s is not None
        ]

    def _observe_share(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(
                r.share,
                {"gliclass.route": r.route, "gliclass.label_set": r.label_set, "gliclass.label": r.label},
            )
            for r in self.top_labels.readings()
        ]

    def _observe_share_change(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(
                r.change,
                {"gliclass.route": r.route, "gliclass.label_set": r.label_set, "gliclass.label": r.label},
            )
            for r in self.top_labels.readings()
            if r.change is not None
        ]

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


def _route_attributes(group: str, topic: str) -> dict[str, str]:
    return {
        "messaging.system": "kafka",
        "messaging.consumer.group.name": group,
        "messaging.destination.name": topic,
    }


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
    for resource_metrics in data.resource_metrics if data is not None else ():  # None: nothing collected
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
