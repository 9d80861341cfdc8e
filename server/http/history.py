"""The console's history: a fixed ring of small rows, one per `resolution_s`, kept with or without viewers.

A sampler thread (`LiveStats.start`) takes a snapshot every `resolution_s` (5 s) and stores what
changed since the previous one as one row: items/s, errors/s and rejections/s per edge, latency
p50/p99 per edge, queue depth, total lag, backlog seconds per route, dead letters per reason in the
interval, and the top-label share per (route, label set). `capacity` rows (720: one hour at 5 s)
bound the memory; every map in a row keeps at most `MAX_SERIES` keys (the largest; the rest fold
into "other"), so a row's size does not grow with the traffic.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RESOLUTION_S = 5.0
CAPACITY = 720
MAX_SERIES = 8


def bounded(counts: Mapping[str, float], limit: int = MAX_SERIES) -> dict[str, float]:
    """The `limit` largest entries, the rest summed into "other" (one more key at most)."""
    if len(counts) <= limit:
        return dict(counts)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:limit])
    out["other"] = out.get("other", 0) + sum(v for _k, v in ranked[limit:])
    return out


class History:
    """The last `capacity` rows (oldest dropped); safe to read while the sampler writes."""

    def __init__(self, resolution_s: float = RESOLUTION_S, capacity: int = CAPACITY) -> None:
        self.resolution_s = resolution_s
        self.capacity = capacity
        self._rows: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(row)

    def rows(self, window_s: float | None = None, since: float | None = None) -> list[dict[str, Any]]:
        """Rows newer than `since` (a row's `t`), else those of the last `window_s`, else all."""
        with self._lock:
            rows = list(self._rows)
        if since is not None:
            return [row for row in rows if row["t"] > since]
        if window_s is not None and rows:
            start = rows[-1]["t"] - window_s
            return [row for row in rows if row["t"] > start]
        return rows

    def __len__(self) -> int:
        return len(self._rows)


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
    wall: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)
    backlog: dict[str, float] = field(default_factory=dict)
    shares: list[dict[str, Any]] = field(default_factory=list)


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


def delta(
    now: tuple[tuple[float, ...], tuple[int, ...]], then: tuple[tuple[float, ...], tuple[int, ...]] | None
):
    bounds, counts = now
    if then is None or then[0] != bounds:
        return bounds, counts
    return bounds, tuple(a - b for a, b in zip(counts, then[1]))


def percentiles(now_h: Any, then_h: Any) -> dict[str, float | None]:
    bounds, counts = delta(now_h, then_h)
    p50, p99 = quantile(0.5, bounds, counts), quantile(0.99, bounds, counts)
    return {
        "p50_ms": None if p50 is None else p50 * 1000.0,
        "p99_ms": None if p99 is None else p99 * 1000.0,
    }


def history_row(now: Snapshot, then: Snapshot | None) -> dict[str, Any]:
    """One history row: what changed from `then` to `now` (rates per second), and gauges at `now`."""
    span = (now.at - then.at) if then is not None else 0.0

    def per_s(a: Mapping[str, int], b: Mapping[str, int] | None) -> dict[str, float]:
        if b is None or span <= 0:
            return dict.fromkeys(a, 0.0)
        return {key: round(max(0, n - b.get(key, 0)) / span, 3) for key, n in a.items()}

    p50: dict[str, float | None] = {}
    p99: dict[str, float | None] = {}
    for edge, hist in now.latency_hists.items():
        figures = percentiles(hist, then.latency_hists.get(edge) if then else None)
        if then is not None and figures["p50_ms"] is not None:
            p50[edge], p99[edge] = round(figures["p50_ms"], 3), round(figures["p99_ms"] or 0.0, 3)
    dead = diff(now.dead_letters, then.dead_letters) if then is not None else {}
    return {
        "t": round(now.wall, 3),
        "items_per_s": per_s(now.items, then.items if then else None),
        "errors_per_s": per_s(now.errors, then.errors if then else None),
        "rejections_per_s": per_s(now.rejections, then.rejections if then else None),
        "p50_ms": p50,
        "p99_ms": p99,
        "queue_depth": sum(now.queue_depth.values()),
        "lag": sum(row["lag"] for row in now.lag),
        "backlog_s": bounded({k: round(v, 3) for k, v in now.backlog.items()}),
        "dead_letters": bounded(dead),
        "top_share": bounded({f"{r['route']} / {r['label_set']}": round(r["share"], 4) for r in now.shares}),
    }


def diff(now: Mapping[str, int], then: Mapping[str, int]) -> dict[str, int]:
    out = {key: n - then.get(key, 0) for key, n in now.items()}
    return {key: n for key, n in sorted(out.items()) if n}
