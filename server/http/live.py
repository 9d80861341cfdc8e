"""The console's live view: rates and percentiles over the last seconds, from counters that exist anyway.

Nothing here runs on the hot path. A snapshot reads the scheduler's `stats()`, the Kafka worker's
`WorkerStats`, the items each edge took in, the collapse alarm's top-label shares and one collection
of the Prometheus registry (consumer lag, backlog, call latencies and outcomes). `GET /v1/stats`
takes one and compares it with the snapshot closest to `window_s` earlier; snapshots are kept at
most one per second for `history_s`. A sampler thread also takes one every 5 s, whether or not
anyone watches, and keeps the change as one row of the `History` ring the console charts.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from gliclass_core.errors import InvalidInput
from gliclass_core.service import ClassifyService
from server.http.history import History, Snapshot, bounded, diff, history_row, percentiles

log = logging.getLogger(__name__)

#: Prometheus histograms (OTel names after the exporter's translation) giving per-edge latency.
LATENCY_HISTOGRAMS = {
    "grpc": "rpc_server_call_duration_seconds",
    "http": "http_server_request_duration_seconds",
    "kafka": "messaging_process_duration_seconds",
}
LAG_GAUGE = "gliclass_kafka_consumer_lag"
BACKLOG_GAUGE = "gliclass_kafka_backlog_duration_seconds"
#: The status label of each edge's latency histogram, and the statuses that are load rejections.
STATUS_LABELS = {"grpc": "rpc_response_status_code", "http": "http_response_status_code"}
OK_STATUSES = {"OK", "200"}
REJECTED_STATUSES = {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "429", "503"}
#: Labels per route in the live view's distribution (the rest fold into "other").
MAX_LABELS = 12


class EdgeCounters:
    """Items each edge has taken in (a plain int per edge: written on the event loop or one thread)."""

    def __init__(self) -> None:
        self.items: dict[str, int] = {"grpc": 0, "http": 0}

    def add(self, edge: str, n: int) -> None:
        self.items[edge] = self.items.get(edge, 0) + n


@dataclass
class RegistryView:
    """What one collection of the Prometheus registry gives the live view."""

    hists: dict[str, tuple[tuple[float, ...], tuple[int, ...]]] = field(default_factory=dict)
    lag: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)
    backlog: dict[str, float] = field(default_factory=dict)


def _registry_view(registry: Any) -> RegistryView:
    """Latency histograms, errors and rejections per edge; lag per partition; backlog per route."""
    view = RegistryView()
    hists, lag = view.hists, view.lag
    if registry is None:
        return view
    wanted = {name: edge for edge, name in LATENCY_HISTOGRAMS.items()}
    for family in registry.collect():
        edge = wanted.get(family.name)
        if edge is not None:
            buckets: dict[float, float] = {}
            status_label = STATUS_LABELS.get(edge)
            view.errors.setdefault(edge, 0)
            view.rejections.setdefault(edge, 0)
            for sample in family.samples:
                if status_label and sample.name.endswith("_count"):
                    status = str(sample.labels.get(status_label, "OK"))
                    if status in REJECTED_STATUSES:
                        view.rejections[edge] += int(sample.value)
                    elif status not in OK_STATUSES and not status.startswith("2"):
                        view.errors[edge] += int(sample.value)
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
            if buckets:
                bounds = sorted(buckets)
                cumulative = [buckets[b] for b in bounds]
                counts = [int(c - (cumulative[i - 1] if i else 0)) for i, c in enumerate(cumulative)]
                finite = tuple(b for b in bounds if math.isfinite(b))
                hists[edge] = (finite, tuple(counts))
        elif family.name == BACKLOG_GAUGE:
            for sample in family.samples:
                route = sample.labels.get("messaging_destination_name", "")
                view.backlog[route] = max(view.backlog.get(route, 0.0), float(sample.value))
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
    return view


def _copied(counts: Any) -> dict[str, int]:
    """A copy of a dict another thread may be adding to (a C-level copy: no Python code runs in it)."""
    for _attempt in range(3):
        try:
            return dict(counts)
        except RuntimeError:  # changed size during the copy (possible without the GIL)
            continue
    return {}


def _top_label_shares() -> list[dict[str, Any]]:
    from gliclass_core import telemetry

    instruments = telemetry.instruments()
    if instruments is None:
        return []
    return [
        {
            "route": r.route,
            "label_set": r.label_set,
            "label": r.label,
            "share": r.share,
            "change": r.change,
            "count": r.count,
        }
        for r in instruments.top_labels.readings()
    ]


#: The console page and the chart library it inlines (uPlot, vendored from npm: static/vendor/).
STATIC = "server.http"
MAX_HISTORY_S = 86_400.0


def console_page() -> bytes:
    """The console: one page, with uPlot's script and style inlined (nothing fetched elsewhere)."""
    static = resources.files(STATIC).joinpath("static")
    page = static.joinpath("console.html").read_bytes()
    script = static.joinpath("vendor/uPlot.iife.min.js").read_bytes()
    style = static.joinpath("vendor/uPlot.min.css").read_bytes()
    page = page.replace(b"/*UPLOT_CSS*/", style, 1)
    return page.replace(b"/*UPLOT_JS*/", script, 1)


def history_query(query: Mapping[str, str]) -> tuple[float | None, float | None]:
    """`?history=SECONDS` (rows of that window) and `?since=T` (rows after the row stamped T).

    Raises InvalidInput naming the parameter for anything but a finite number in range.
    """
    out: list[float | None] = []
    for name, high in (("history", MAX_HISTORY_S), ("since", math.inf)):
        raw = query.get(name)
        if raw is None or raw == "":
            out.append(None)
            continue
        try:
            value = float(raw)
        except ValueError:
            raise InvalidInput(f"{name} must be a number of seconds, not {raw[:40]!r}", field=name) from None
        if not math.isfinite(value) or value < 0 or value > high:
            raise InvalidInput(f"{name} must be between 0 and {high:g}", field=name)
        out.append(value)
    return out[0], out[1]


class LiveStats:
    """Snapshots on demand, the sampled history, and the JSON the console's live view draws."""

    def __init__(
        self,
        runtime: ClassifyService,
        counters: EdgeCounters,
        registry: Any = None,
        worker: Callable[[], Any] | None = None,
        window_s: float = 10.0,
        history_s: float = 600.0,
        history: History | None = None,
    ) -> None:
        self.runtime = runtime
        self.counters = counters
        self.registry = registry
        self.worker = worker or (lambda: None)
        self.window_s = window_s
        self.history = history or History()
        self._snapshots: deque[Snapshot] = deque(maxlen=int(history_s) + 1)
        self._lock = threading.Lock()
        self._sampled: Snapshot | None = None
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    # ------------------------------------------------------------------ the sampler

    def start(self) -> None:
        """Sample every `history.resolution_s` on a daemon thread until `stop`."""
        if self._sampler is None:
            self._sampled = self.snapshot()
            self._sampler = threading.Thread(
                target=self._sample_loop, name="gliclass-live-history", daemon=True
            )
            self._sampler.start()

    def stop(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(10)
            self._sampler = None

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.history.resolution_s):
            try:
                self.sample()
            except Exception:  # a figure that failed to read must not end the history
                log.exception("live history: sampling failed")

    def sample(self) -> dict[str, Any]:
        """Take a snapshot now and add its change since the previous sample as one history row."""
        now = self.snapshot()
        self._keep(now)
        then, self._sampled = self._sampled, now
        row = history_row(now, then)
        self.history.add(row)
        return row

    # ------------------------------------------------------------------ snapshots

    def model_name(self) -> str | None:
        try:
            return str(self.runtime.info.model_id)
        except Exception:  # not loaded yet, or a runtime without info
            return None

    def snapshot(self) -> Snapshot:
        s = self.runtime.stats()
        view = _registry_view(self.registry)
        worker = self.worker()
        items = _copied(self.counters.items)
        errors, rejections = dict(view.errors), dict(view.rejections)
        dead: dict[str, int] = {}
        labels: dict[str, dict[str, int]] = {}
        scored = 0
        if worker is not None:
            ws = worker.stats()
            items["kafka"] = ws.consumed
            scored = ws.scored
            dead = _copied(ws.dead_letter_reasons)
            errors["kafka"] = sum(dead.values())
            rejections["kafka"] = 0  # Kafka pauses its partitions instead of refusing records
            by_route = _copied(getattr(ws, "predicted_labels", {}))
            labels = {route: _copied(counts) for route, counts in by_route.items()}
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
            latency_hists=view.hists,
            lag=view.lag,
            dead_letters=dead,
            labels_by_route=labels,
            worker_scored=scored,
            wall=time.time(),
            errors=errors,
            rejections=rejections,
            backlog=view.backlog,
            shares=_top_label_shares(),
        )

    def _keep(self, now: Snapshot) -> None:
        with self._lock:
            if not self._snapshots or now.at - self._snapshots[-1].at >= 1.0:
                self._snapshots.append(now)

    def _record(self) -> tuple[Snapshot, Snapshot | None, Snapshot | None]:
        now = self.snapshot()
        self._keep(now)
        with self._lock:
            history = self._snapshots
            ats = [snap.at for snap in history]
            i = bisect.bisect_right(ats, now.at - self.window_s)
            window = history[max(0, i - 1)] if history and history[max(0, i - 1)] is not now else None
            oldest = history[0] if history and history[0] is not now else None
        return now, window, oldest

    def to_json(self, history_window_s: float | None = None, since: float | None = None) -> dict[str, Any]:
        """Rates over the window, percentiles of what the window saw, current gauges, history rows.

        `history_window_s` / `since`: which history rows to include (none when both are None).
        """
        now, then, oldest = self._record()
        span = (now.at - then.at) if then is not None else 0.0

        def rate(a: float, b: float) -> float:
            return (a - b) / span if span > 0 else 0.0

        def pct(now_h: Any, then_h: Any) -> dict[str, float | None]:
            return percentiles(now_h, then_h)

        edges: dict[str, dict[str, Any]] = {}
        for edge in sorted({*now.items, *now.errors, *now.rejections}):
            n = now.items.get(edge, 0)
            errors, rejected = now.errors.get(edge, 0), now.rejections.get(edge, 0)
            edges[edge] = {
                "items": n,
                "items_per_s": rate(n, then.items.get(edge, 0) if then else n),
                "errors": errors,
                "errors_per_s": rate(errors, then.errors.get(edge, 0) if then else errors),
                "rejections": rejected,
                "rejections_per_s": rate(rejected, then.rejections.get(edge, 0) if then else rejected),
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
        body: dict[str, Any] = {
            "model": self.model_name(),
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
            "backlog_s": now.backlog,
            "top_labels": now.shares,
            "dead_letters": diff(now.dead_letters, base.dead_letters if base else {}),
            "labels_by_route": {
                route: bounded(
                    diff(counts, (base.labels_by_route.get(route, {}) if base else {})), MAX_LABELS
                )
                for route, counts in now.labels_by_route.items()
            },
        }
        if history_window_s is not None or since is not None:
            body["history"] = {
                "resolution_s": self.history.resolution_s,
                "capacity": self.history.capacity,
                "rows": self.history.rows(history_window_s, since),
            }
        return body
