"""The console's live view: rates and percentiles over the last seconds, from counters that exist anyway.

Nothing here runs on the hot path. Each `GET /v1/stats` takes one snapshot (the scheduler's
`stats()`, the Kafka worker's `WorkerStats`, the items each edge took in, and one collection of
the Prometheus registry for consumer lag and call latencies) and compares it with the snapshot
closest to `window_s` earlier. Snapshots are kept at most one per second for `history_s`, so the
cost is paid only while a console (or anyone) polls, and memory stays bounded.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gliclass_core.service import ClassifyService
from server.grpc.interceptors import CLASSIFIER_METHODS, Around, CallInterceptor

#: Prometheus histograms (OTel names after the exporter's translation) giving per-edge latency.
LATENCY_HISTOGRAMS = {
    "grpc": "rpc_server_call_duration_seconds",
    "http": "http_server_request_duration_seconds",
    "kafka": "messaging_process_duration_seconds",
}
LAG_GAUGE = "gliclass_kafka_consumer_lag"


class EdgeCounters:
    """Items each edge has taken in (a plain int per edge: written on the event loop or one thread)."""

    def __init__(self) -> None:
        self.items: dict[str, int] = {"grpc": 0, "http": 0}

    def add(self, edge: str, n: int) -> None:
        self.items[edge] = self.items.get(edge, 0) + n


class ItemCountInterceptor(CallInterceptor):
    """Count the items of every Classifier call (unary and stream) into `EdgeCounters` as "grpc"."""

    def __init__(self, counters: EdgeCounters) -> None:
        self.counters = counters

    def around_call(self, method: str, metadata: Any) -> Around | None:
        return self._counted if method.startswith(CLASSIFIER_METHODS) else None

    @contextlib.asynccontextmanager
    async def _counted(self, request: Any, context: Any) -> AsyncIterator[Any]:
        if hasattr(request, "__aiter__"):
            yield self._count_stream(request)
        else:
            self.counters.add("grpc", len(getattr(request, "items", ())))
            yield request

    async def _count_stream(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            self.counters.add("grpc", len(request.items))
            yield request


@dataclass(frozen=True)
class Snapshot:
    at: float
    items: dict[str, int]
    completed: int
    real_tokens: int
    padded_tokens: int
    batches: int
    batch_rows: float
    queue_depth: dict[str, int]
    in_flight_batches: int
    queue_hist: tuple[tuple[float, ...], tuple[int, ...]]
    compute_hist: tuple[tuple[float, ...], tuple[int, ...]]
    latency_hists: dict[str, tuple[tuple[float, ...], tuple[int, ...]]]
    lag: list[dict[str, Any]]
    dead_letters: dict[str, int]
    labels_by_route: dict[str, dict[str, int]]
    worker_scored: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def quantile(q: float, bounds: tuple[float, ...], counts: Iterable[int]) -> float | None:
    """Estimate a quantile from bucket counts (`bounds[i]` = upper bound of bucket i, last is +inf)."""
    counts = list(counts)
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0
    for i, n in enumerate(counts):
        if cumulative + n >= rank and n > 0:
            lower = bounds[i - 1] if i > 0 else 0.0
            upper = bounds[i] if i < len(bounds) else (bounds[-1] if bounds else 0.0)
            if i >= len(bounds):
                return upper
            return lower + (upper - lower) * ((rank - cumulative) / n)
        cumulative += n
    return bounds[-1] if bounds else None


def _delta(
    now: tuple[tuple[float, ...], tuple[int, ...]], then: tuple[tuple[float, ...], tuple[int, ...]] | None
):
    bounds, counts = now
    if then is None or then[0] != bounds:
        return bounds, counts
    return bounds, tuple(a - b for a, b in zip(counts, then[1]))


def _registry_view(
    registry: Any,
) -> tuple[dict[str, tuple[tuple[float, ...], tuple[int, ...]]], list[dict[str, Any]]]:
    """Latency histograms per edge (summed over labels) and consumer lag per partition."""
    hists: dict[str, tuple[tuple[float, ...], tuple[int, ...]]] = {}
    lag: list[dict[str, Any]] = []
    if registry is None:
        return hists, lag
    wanted = {name: edge for edge, name in LATENCY_HISTOGRAMS.items()}
    for family in registry.collect():
        edge = wanted.get(family.name)
        if edge is not None:
            buckets: dict[float, float] = {}
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
            if buckets:
                bounds = sorted(buckets)
                cumulative = [buckets[b] for b in bounds]
                counts = [int(c - (cumulative[i - 1] if i else 0)) for i, c in enumerate(cumulative)]
                finite = tuple(b for b in bounds if math.isfinite(b))
                hists[edge] = (finite, tuple(counts))
        elif family.name == LAG_GAUGE:
            for sample in family.samples:
                lag.append(
                    {
                        "topic": sample.labels.get("messaging_destination_name", ""),
                        "partition": int(sample.labels.get("messaging_destination_partition_id", "0")),
                        "lag": int(sample.value),
                    }
                )
    lag.sort(key=lambda row: (row["topic"], row["partition"]))
    return hists, lag


class LiveStats:
    """Snapshots on demand and the JSON the console's live view draws."""

    def __init__(
        self,
        runtime: ClassifyService,
        counters: EdgeCounters,
        registry: Any = None,
        worker: Callable[[], Any] | None = None,
        window_s: float = 10.0,
        history_s: float = 600.0,
    ) -> None:
        self.runtime = runtime
        self.counters = counters
        self.registry = registry
        self.worker = worker or (lambda: None)
        self.window_s = window_s
        self._history: deque[Snapshot] = deque(maxlen=int(history_s) + 1)
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        s = self.runtime.stats()
        hists, lag = _registry_view(self.registry)
        worker = self.worker()
        items = dict(self.counters.items)
        dead: dict[str, int] = {}
        labels: dict[str, dict[str, int]] = {}
        scored = 0
        if worker is not None:
            ws = worker.stats()
            items["kafka"] = ws.consumed
            scored = ws.scored
            dead = dict(ws.dead_letter_reasons)
            labels = {route: dict(counts) for route, counts in getattr(ws, "predicted_labels", {}).items()}
        return Snapshot(
            at=time.monotonic(),
            items=items,
            completed=s.completed_items,
            real_tokens=s.real_tokens,
            padded_tokens=s.padded_tokens,
            batches=s.batches,
            batch_rows=s.batch_size.total,
            queue_depth={"interactive": s.queue_depth_interactive, "bulk": s.queue_depth_bulk},
            in_flight_batches=s.in_flight_batches,
            queue_hist=(s.queue_time_s.bounds, s.queue_time_s.counts),
            compute_hist=(s.compute_time_s.bounds, s.compute_time_s.counts),
            latency_hists=hists,
            lag=lag,
            dead_letters=dead,
            labels_by_route=labels,
            worker_scored=scored,
        )

    def _record(self) -> tuple[Snapshot, Snapshot | None, Snapshot | None]:
        now = self.snapshot()
        with self._lock:
            history = self._history
            if not history or now.at - history[-1].at >= 1.0:
                history.append(now)
            ats = [snap.at for snap in history]
            i = bisect.bisect_right(ats, now.at - self.window_s)
            window = history[max(0, i - 1)] if history and history[max(0, i - 1)] is not now else None
            oldest = history[0] if history and history[0] is not now else None
        return now, window, oldest

    def to_json(self) -> dict[str, Any]:
        """Rates over the window, percentiles of what the window saw, and current gauges."""
        now, then, oldest = self._record()
        span = (now.at - then.at) if then is not None else 0.0

        def rate(a: int, b: int) -> float:
            return (a - b) / span if span > 0 else 0.0

        def pct(now_h: Any, then_h: Any) -> dict[str, float | None]:
            bounds, counts = _delta(now_h, then_h)
            p50, p99 = quantile(0.5, bounds, counts), quantile(0.99, bounds, counts)
            return {
                "p50_ms": None if p50 is None else p50 * 1000.0,
                "p99_ms": None if p99 is None else p99 * 1000.0,
            }

        edges: dict[str, dict[str, Any]] = {
            edge: {"items": n, "items_per_s": rate(n, then.items.get(edge, 0) if then else n)}
            for edge, n in now.items.items()
        }
        for edge, hist in now.latency_hists.items():
            edges.setdefault(edge, {"items": 0, "items_per_s": 0.0})["latency"] = pct(
                hist, then.latency_hists.get(edge) if then else None
            )
        batches = now.batches - (then.batches if then else 0)
        rows = now.batch_rows - (then.batch_rows if then else 0)
        real = now.real_tokens - (then.real_tokens if then else 0)
        padded = now.padded_tokens - (then.padded_tokens if then else 0)
        base = oldest or then
        return {
            "window_s": span,
            "history_s": (now.at - base.at) if base else 0.0,
            "edges": edges,
            "completed_per_s": rate(now.completed, then.completed if then else now.completed),
            "queue_depth": now.queue_depth,
            "in_flight_batches": now.in_flight_batches,
            "queue": pct(now.queue_hist, then.queue_hist if then else None),
            "compute": pct(now.compute_hist, then.compute_hist if then else None),
            "batch": {
                "batches_per_s": rate(now.batches, then.batches if then else now.batches),
                "mean_size": rows / batches if batches else None,
                "padding_efficiency": real / padded if padded else None,
            },
            "consumer_lag": now.lag,
            "dead_letters": _diff(now.dead_letters, base.dead_letters if base else {}),
            "labels_by_route": {
                route: _diff(counts, (base.labels_by_route.get(route, {}) if base else {}))
                for route, counts in now.labels_by_route.items()
            },
        }


def _diff(now: Mapping[str, int], then: Mapping[str, int]) -> dict[str, int]:
    out = {key: n - then.get(key, 0) for key, n in now.items()}
    return {key: n for key, n in sorted(out.items()) if n}
