"""Streaming sessions' metrics: their size now, what happened to them, and how appends were batched.

Read from `runtime.sessions.stats()` (every replica's `SessionStore` summed) and the scheduler's
session queue of every observed runtime when the metric reader collects, by `gliclass.device`
like the scheduler's. A runtime whose model keeps no sessions exports zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

#: `SessionStats` counters exported as `gliclass.sessions.events{gliclass.event=...}`.
SESSION_EVENTS = {
    "created": "created",
    "appends": "appended",
    "scored": "scored",
    "closed": "closed",
    "expired": "expired",
    "offloaded": "offloaded",
    "dropped": "dropped",
}


class SessionInstruments:
    """The sessions' observable instruments on `meter`, reading the runtimes `runtimes()` lists."""

    def __init__(self, meter: Meter, runtimes: Callable[[], list[Any]]) -> None:
        self._runtimes = runtimes
        gauges = (
            ("gliclass.sessions.active", "sessions", "{session}", "Sessions open (cached or not yet)"),
            ("gliclass.sessions.cache.size", "bytes_cached", "By", "Bytes of the sessions' cached state"),
            ("gliclass.sessions.cached_tokens", "cached_tokens", "{token}", "Tokens cached, all sessions"),
        )
        for name, field, unit, description in gauges:
            meter.create_observable_gauge(
                name, callbacks=[self._reader(field)], unit=unit, description=description
            )
        counters = (
            ("gliclass.sessions.tokens", "tokens_computed", "{token}", "Decoder tokens computed"),
            ("gliclass.sessions.batches", "batches", "{batch}", "Session batches run"),
            ("gliclass.sessions.batch.appends", "batch_appends", "{append}", "Appends the batches carried"),
        )
        for name, field, unit, description in counters:
            meter.create_observable_counter(
                name, callbacks=[self._reader(field)], unit=unit, description=description
            )
        meter.create_observable_counter(
            "gliclass.sessions.events",
            callbacks=[self._observe_events],
            unit="{event}",
            description="Session events: created, appended, scored, closed, expired, offloaded, dropped",
        )
        meter.create_observable_up_down_counter(
            "gliclass.sessions.queue.depth",
            callbacks=[self._observe_depth],
            unit="{append}",
            description="Session appends and closes waiting in the scheduler queue, by priority",
        )

    def _stats_by_device(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for runtime in self._runtimes():
            sessions = getattr(runtime, "sessions", None)
            if sessions is None:
                continue
            out.setdefault(_device(runtime), []).append(sessions.stats())
        return out

    def _reader(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(sum(getattr(s, field) for s in stats), {"gliclass.device": device})
                for device, stats in self._stats_by_device().items()
            ]

        return observe

    def _observe_events(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(
                sum(getattr(s, field) for s in stats), {"gliclass.event": event, "gliclass.device": device}
            )
            for device, stats in self._stats_by_device().items()
            for field, event in SESSION_EVENTS.items()
        ]

    def _observe_depth(self, _options: CallbackOptions) -> Iterable[Observation]:
        from gliclass_core.runtime.batch_forming import Priority

        depths: dict[tuple[str, str], int] = {}
        for runtime in self._runtimes():
            queue = getattr(getattr(runtime, "scheduler", None), "sessions", None)
            if queue is None:
                continue
            for priority in Priority:
                key = (_device(runtime), priority.name.lower())
                depths[key] = depths.get(key, 0) + queue.depth_of(priority)
        return [
            Observation(n, {"gliclass.priority": priority, "gliclass.device": device})
            for (device, priority), n in sorted(depths.items())
        ]


def _device(runtime: Any) -> str:
    specs = getattr(getattr(runtime, "pool", None), "specs", ())
    return ",".join(str(spec.device) for spec in specs) or "unknown"
