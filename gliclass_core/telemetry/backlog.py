"""Backlog in time per route: consumer lag over the drain rate of the last minute.

Definitions (docs/operations/observability.md has the same table):

- drain rate (records/s) of a route: for each of its input partitions, how far the commit position
  moved during the last `window_s` (60 s; less for a partition assigned since, at least
  `min_span_s`), divided by the seconds between the two readings, summed over the partitions;
- arrival rate: the same over the partitions' high watermarks;
- backlog seconds = lag / max(drain rate, 1 / window_s). A route that drained nothing in the window
  counts as draining one record per window, so a stalled route shows a large, finite backlog that
  grows with its lag (a scaler or an alert can act on it; infinity would break both);
- predicted drain time = lag / (drain rate - arrival rate) when the lag shrinks, 0 with no lag,
  and absent while the lag is not shrinking;
- a route none of whose partitions has been seen for `min_span_s` (5 s) has no figures yet.

Pure: the caller (the Kafka worker's loop thread, once a second) passes positions and watermarks in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

TP = tuple[str, int]


@dataclass(frozen=True)
class Backlog:
    """One route's (input topic's) backlog figures."""

    lag: int
    drain_per_s: float
    arrival_per_s: float
    seconds: float
    drain_time_s: float | None


class BacklogEstimator:
    """Readings of positions and high watermarks over the last `window_s`, per partition."""

    def __init__(self, window_s: float = 60.0, max_readings: int = 256, min_span_s: float = 5.0) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._readings: deque[tuple[float, dict[TP, int], dict[TP, int]]] = deque(maxlen=max_readings)

    def observe(self, now: float, positions: Mapping[TP, int], highs: Mapping[TP, int]) -> None:
        """Add one reading: the next offset to commit and the high watermark of each partition."""
        self._readings.append((now, dict(positions), dict(highs)))
        while len(self._readings) > 2 and now - self._readings[1][0] >= self.window_s:
            self._readings.popleft()  # keep the newest reading at least `window_s` old

    def routes(self) -> dict[str, Backlog]:
        """Backlog figures per input topic, each partition against its oldest kept reading.

        A partition seen for less than `min_span_s` has no rate yet; a topic none of whose
        partitions has one is left out (unknown), rather than reported as stalled.
        """
        if not self._readings:
            return {}
        at, positions, highs = self._readings[-1]
        first: dict[TP, tuple[float, int, int | None]] = {}
        for then_at, then_positions, then_highs in self._readings:
            for tp, position in then_positions.items():
                if tp not in first:
                    first[tp] = (then_at, position, then_highs.get(tp))
        lag: dict[str, int] = {}
        drain: dict[str, float] = {}
        arrival: dict[str, float] = {}
        for tp, position in positions.items():
            topic = tp[0]
            high = highs.get(tp)
            lag[topic] = lag.get(topic, 0) + (max(0, high - position) if high is not None else 0)
            then_at, then_position, then_high = first[tp]
            span = at - then_at
            if span < self.min_span_s:
                continue
            drain[topic] = drain.get(topic, 0.0) + max(0, position - then_position) / span
            if high is not None and then_high is not None:
                arrival[topic] = arrival.get(topic, 0.0) + max(0, high - then_high) / span
        out = {}
        for topic, behind in lag.items():
            if topic not in drain:
                continue
            rate, incoming = drain[topic], arrival.get(topic, 0.0)
            seconds = behind / max(rate, 1.0 / self.window_s) if behind else 0.0
            if not behind:
                drain_time: float | None = 0.0
            elif rate > incoming:
                drain_time = behind / (rate - incoming)
            else:
                drain_time = None
            out[topic] = Backlog(behind, rate, incoming, seconds, drain_time)
        return out
