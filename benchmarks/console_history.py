"""The console's history: server CPU per poll and per scrape with a full ring, and the ring's memory.

Usage (about a minute on CPU; prints one JSON object):

    python benchmarks/console_history.py --polls 200

In one process: a real runtime (`builtin:minilm` on CPU) with the Prometheus reader installed, as
`serve` runs with `[http]`, after some classify traffic so every histogram has buckets. The live
view's history ring is filled to capacity (720 rows, one hour at 5 s) with rows of a busy
deployment's shape (three edges, three routes with backlog and a top-label share each, three
dead-letter reasons), built by the same `history_row` the sampler uses. Then, on this thread,
CPU time (`time.thread_time`, not wall time) of:

- a console poll as the page sends it each second (`/v1/stats?since=<last row>`: live figures
  plus the rows it has not seen) and the same with no history parameter (the view before history);
- the page's first load of the whole hour (`/v1/stats?history=3600`);
- one history sample (the sampler's work every 5 s);
- a `/metrics` scrape (`generate_latest` of the registry).

Each is the body the HTTP handler builds (the `to_json` dict serialised by `json.dumps`), without
aiohttp's request handling. Memory: `tracemalloc` around filling the ring, divided per row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import generate_latest

from gliclass_core import telemetry
from gliclass_core.config import parse_config
from gliclass_core.runtime import Runtime
from gliclass_core.telemetry.setup import prometheus_reader
from gliclass_core.types import ClassifyItem
from server.http.history import CAPACITY, History, Snapshot, history_row
from server.http.live import EdgeCounters, LiveStats

LABELS = ("billing", "bug report", "feature request", "account access")


def busy_snapshot(at: float, step: int) -> Snapshot:
    """A snapshot of a deployment with traffic on every edge, three routes and dead letters."""
    bounds = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
    hist = (bounds, tuple(step * (i + 1) for i in range(len(bounds) + 1)))
    routes = ("tickets", "posts", "reviews")
    return Snapshot(
        at=at,
        items={"grpc": 40 * step, "http": 25 * step, "kafka": 300 * step},
        completed=365 * step,
        real_tokens=9000 * step,
        padded_tokens=11000 * step,
        batches=12 * step,
        batch_rows=365.0 * step,
        queue_depth={"interactive": step % 7, "bulk": step % 50},
        in_flight_batches=1,
        queue_hist=hist,
        compute_hist=hist,
        latency_hists={"grpc": hist, "http": hist, "kafka": hist},
        lag=[{"topic": r, "partition": p, "lag": step % 90} for r in routes for p in range(3)],
        dead_letters={"invalid_json": 3 * step, "missing_text": step, "too_large": step // 3},
        labels_by_route={r: {label: step for label in LABELS} for r in routes},
        wall=1.7e9 + at,
        errors={"grpc": step // 10, "http": step // 20, "kafka": 4 * step},
        rejections={"grpc": step // 50, "http": step // 40, "kafka": 0},
        backlog={r: float(step % 120) for r in routes},
        shares=[
            {
                "route": r,
                "label_set": "support",
                "label": "billing",
                "share": 0.41,
                "change": 0.02,
                "count": 900,
            }
            for r in routes
        ],
    )


def fill(history: History, rows: int) -> None:
    then = busy_snapshot(0.0, 1)
    for step in range(2, rows + 2):
        now = busy_snapshot(5.0 * step, step)
        history.add(history_row(now, then))
        then = now


def cpu_ms(work: Any, n: int) -> float:
    started = time.thread_time()
    for _ in range(n):
        work()
    return (time.thread_time() - started) * 1000 / n


def interleaved(works: dict[str, Any], n: int, rounds: int = 10) -> dict[str, float]:
    """Median CPU ms per call of each, measured in alternating rounds (the machine is shared)."""
    per_round: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(rounds):
        for name, work in works.items():
            per_round[name].append(cpu_ms(work, max(1, n // rounds)))
    return {name: statistics.median(values) for name, values in per_round.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--traffic", type=int, default=64, help="texts classified before measuring")
    args = parser.parse_args()

    # Memory of a full ring, measured alone (nothing else allocates meanwhile).
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    ring = History()
    fill(ring, CAPACITY)
    after = tracemalloc.take_snapshot()
    ring_bytes = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # The per-second snapshots the live figures compare against: at most 601 (10 min at 1/s).
    before = tracemalloc.take_snapshot()
    snapshots = [busy_snapshot(float(i), i) for i in range(601)]
    after = tracemalloc.take_snapshot()
    snapshots_bytes = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    del snapshots
    tracemalloc.stop()

    config = parse_config(
        {
            "model": {"id": "builtin:minilm", "device": "cpu"},
            "label_sets": {"support": {"labels": list(LABELS)}},
        }
    )
    runtime = Runtime.from_config(config)
    runtime.start()
    if not runtime.wait_ready(timeout=300):
        raise SystemExit(f"runtime did not start: {runtime.error}")
    registry, reader = prometheus_reader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.install(None, provider)
    telemetry.observe_runtime(runtime)
    try:
        items = [ClassifyItem(text=f"my card was charged twice, order {i}", labels=LABELS) for i in range(8)]
        for _ in range(max(1, args.traffic // len(items))):
            for future in runtime.scheduler.submit(items):
                future.result(60)
        live = LiveStats(runtime, EdgeCounters(), registry, history=ring)
        last = ring.rows()[-2]["t"]  # one unseen row per poll, as in steady state

        def poll_since() -> None:
            json.dumps(live.to_json(None, last))

        def poll_plain() -> None:
            json.dumps(live.to_json())

        def first_load() -> None:
            json.dumps(live.to_json(3600.0, None))

        measured = interleaved(
            {
                "cpu_ms_per_poll_since": poll_since,
                "cpu_ms_per_poll_without_history": poll_plain,
                "cpu_ms_per_scrape": lambda: generate_latest(registry),
            },
            args.polls,
        )
        figures: dict[str, Any] = {
            "ring_rows": len(ring),
            "ring_bytes": ring_bytes,
            "bytes_per_row": ring_bytes / len(ring),
            "snapshots_601_bytes": snapshots_bytes,
            "row_json_bytes": len(json.dumps(ring.rows()[-1])),
            **measured,
            "cpu_ms_per_first_load_hour": cpu_ms(first_load, max(5, args.polls // 10)),
            "first_load_hour_json_bytes": len(json.dumps(live.to_json(3600.0, None))),
            "scrape_bytes": len(generate_latest(registry)),
        }
        sampler = LiveStats(runtime, EdgeCounters(), registry)
        sampler._sampled = sampler.snapshot()
        figures["cpu_ms_per_history_sample"] = cpu_ms(sampler.sample, args.polls)
    finally:
        telemetry.forget_runtime(runtime)
        telemetry.uninstall()
        provider.shutdown()
        runtime.stop()
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}, indent=1))


if __name__ == "__main__":
    main()
