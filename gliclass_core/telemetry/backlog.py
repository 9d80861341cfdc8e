"""Backlog in time per route: consumer lag over the drain rate of the last minute.

Definitions (docs/operations/observability.md has the same table):

- drain rate (records/s) of a route: how far the commit positions of its input partitions moved
  during the last `window_s` (60 s), divided by the seconds between the two readings;
- arrival rate: the same over the partitions' high watermarks;
- backlog seconds = lag / max(drain rate, 1 / window_s). A route that drained nothing in the window
  counts as draining one record per window, so a stalled route shows a large, finite backlog that
  grows with its lag (a scaler or an alert can act on it; infinity would break both);
- predicted drain time = lag / (drain rate - arrival rate) when the lag shrinks, 0 with no lag,
  and absent while the lag is not shrinking.

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

    def __init__(self, window_s: float = 60.0, max_readings: int = 256) -> None:
        self.window_s = window_s
        self._readings: deque[tuple[float, dict[TP, int], dict[TP, int]]] = deque(maxlen=max_readings)

    def observe(self, now: float, positions: Mapping[TP, int], highs: Mapping[TP, int]) -> None:
        """Add one reading: the next offset to commit and the high watermark of each partition."""
        self._readings.append((now, dict(positions), dict(highs)))
        while len(self._readings) > 2 and now - self._readings[1][0] >= self.window_s:
            self._readings.popleft()  # keep the newest reading at least `window_s` old

    def routes(self) -> dict[str, Backlog]:
        """Backlog figures per input topic, from the newest reading against the oldest kept."""
        if not self._readings:
            return {}
        at, positions, highs = self._readings[-1]
        then_at, then_positions, then_highs = self._readings[0]
        span = at - then_at
        lag: dict[str, int] = {}
        drained: dict[str, int] = {}
        arrived: dict[str, int] = {}
        for tp, position in positions.items():
            topic = tp[0]
            high = highs.get(tp)
            lag[topic] = lag.get(topic, 0) + (max(0, high - position) if high is not None else 0)
            if tp in then_positions:  # a partition assigned since then has no rate yet
                drained[topic] = drained.get(topic, 0) + max(0, position - then_positions[tp])
            if high is not None and tp in then_highs:
                arrived[topic] = arrived.get(topic, 0) + max(0, high - then_highs[tp])
        out = {}
        for topic, behind in lag.items():
            drain = drained.get(topic, 0) / span if span > 0 else 0.0
            arrival = arrived.get(topic, 0) / span if span > 0 else 0.0
            seconds = behind / max(drain, 1.0 / self.window_s) if behind else 0.0
            if not behind:
                drain_time: float | None = 0.0
            elif drain > arrival:
                drain_time = behind / (drain - arrival)
            else:
                drain_time = None
            out[topic] = Backlog(behind, drain, arrival, seconds, drain_time)
        return out
