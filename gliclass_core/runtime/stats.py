"""Scheduler counters: cumulative totals and fixed-bucket histograms, snapshotted on demand.

The telemetry layer exports a `SchedulerStats` snapshot (e.g. as OTel observable instruments);
counters only ever grow, so exporters can compute rates from two snapshots.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

#: Upper bounds of the histogram buckets; a final implicit bucket holds everything above.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SECONDS_BUCKETS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class Histogram:
    """Counts per bucket (`bounds[i]` is bucket i's inclusive upper bound; last bucket is +inf)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float
    count: int

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass(frozen=True)
class SchedulerStats:
    """A consistent snapshot of every scheduler counter."""

    queue_depth: int
    queue_depth_interactive: int
    queue_depth_bulk: int
    in_flight_batches: int
    submitted_items: int
    completed_items: int
    failed_items: int
    expired_items: int
    cancelled_items: int
    rejected_items: int
    batches: int
    oom_splits: int
    real_tokens: int
    padded_tokens: int
    max_batch_size_seen: int
    batch_size: Histogram
    queue_time_s: Histogram
    compute_time_s: Histogram
    batches_per_device: dict[str, int] = field(default_factory=dict)

    @property
    def padding_efficiency(self) -> float:
        """Real tokens / computed (padded) tokens over all batches so far."""
        return self.real_tokens / self.padded_tokens if self.padded_tokens else 1.0

    @property
    def mean_batch_size(self) -> float:
        return self.batch_size.mean


class _Buckets:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def freeze(self) -> Histogram:
        return Histogram(self.bounds, tuple(self.counts), self.total, self.count)


class StatsObserver(Protocol):
    """Told of each batch and forward pass as it is recorded (the telemetry layer's histograms)."""

    def on_batch(
        self, device: str, size: int, real: int, padded: int, queue_times: Sequence[float]
    ) -> None: ...

    def on_compute(self, seconds: float, device: str = "") -> None: ...


_observers: tuple[StatsObserver, ...] = ()


def add_observer(observer: StatsObserver) -> None:
    """Tell `observer` of every batch and forward pass of every scheduler in this process."""
    global _observers
    _observers = (*_observers, observer)


def remove_observer(observer: StatsObserver) -> None:
    global _observers
    _observers = tuple(o for o in _observers if o is not observer)


class StatsRecorder:
    """Thread-safe accumulation of the counters in `SchedulerStats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {
            name: 0
            for name in (
                "submitted_items",
                "completed_items",
                "failed_items",
                "expired_items",
                "cancelled_items",
                "rejected_items",
                "batches",
                "oom_splits",
                "real_tokens",
                "padded_tokens",
                "max_batch_size_seen",
            )
        }
        self._batch_size = _Buckets(BATCH_SIZE_BUCKETS)
        self._queue_time = _Buckets(SECONDS_BUCKETS)
        self._compute_time = _Buckets(SECONDS_BUCKETS)
        self._per_device: dict[str, int] = {}

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to the counter `name`."""
        with self._lock:
            self._counts[name] += n

    def batch(self, device: str, size: int, real: int, padded: int, queue_times: list[float]) -> None:
        """Record one dispatched batch and the queue time of each of its rows."""
        with self._lock:
            c = self._counts
            c["batches"] += 1
            c["real_tokens"] += real
            c["padded_tokens"] += padded
            c["max_batch_size_seen"] = max(c["max_batch_size_seen"], size)
            self._batch_size.add(size)
            for wait in queue_times:
                self._queue_time.add(wait)
            self._per_device[device] = self._per_device.get(device, 0) + 1
        for observer in _observers:  # outside the lock: observers export, they never call back here
            observer.on_batch(device, size, real, padded, queue_times)

    def compute(self, seconds: float, device: str = "") -> None:
        """Record the wall time of one forward pass on `device`."""
        with self._lock:
            self._compute_time.add(seconds)
        for observer in _observers:
            observer.on_compute(seconds, device)

    def snapshot(self, depth_interactive: int, depth_bulk: int, in_flight: int) -> SchedulerStats:
        """Freeze the counters together with the current queue depths."""
        with self._lock:
            return SchedulerStats(
                queue_depth=depth_interactive + depth_bulk,
                queue_depth_interactive=depth_interactive,
                queue_depth_bulk=depth_bulk,
                in_flight_batches=in_flight,
                batch_size=self._batch_size.freeze(),
                queue_time_s=self._queue_time.freeze(),
                compute_time_s=self._compute_time.freeze(),
                batches_per_device=dict(self._per_device),
                **self._counts,
            )
