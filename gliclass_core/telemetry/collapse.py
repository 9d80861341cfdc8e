"""The prediction-collapse alarm's figure: the share of the most frequent top label per route.

A zero-shot model can collapse onto one class (every text gets the same top label). For each
(route, label set) this keeps how often each label was the top-scored one, in time buckets, and
reports over the sliding `window_s`:

- `share`: the count of the most frequent top label over all predictions in the window;
- `change`: that share minus the same label's share over the baseline (the `baseline_s` before the
  window). A label set where one label always dominates has a high share and no change; a collapse
  has both.

Everything is bounded: `max_keys` (route, label set) pairs, `max_labels` labels per pair (more fold
into "other"), `baseline_s / bucket_s` buckets per pair. Written by one thread (the Kafka loop),
read by another (the metric reader, the console): a lock guards both.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from gliclass_core.config import ConfigError

OTHER = "other"


@dataclass(frozen=True)
class ShareReading:
    """The top label of one (route, label set) over the window, and its change from the baseline."""

    route: str
    label_set: str
    label: str
    share: float
    count: int
    baseline_share: float | None
    baseline_count: int

    @property
    def change(self) -> float | None:
        return None if self.baseline_share is None else self.share - self.baseline_share


class TopLabelShare:
    """Sliding-window counts of each prediction's top label, per (route, label set)."""

    def __init__(
        self,
        window_s: float = 300.0,
        baseline_s: float = 3600.0,
        bucket_s: float = 10.0,
        min_count: int = 20,
        max_keys: int = 64,
        max_labels: int = 64,
    ) -> None:
        if not 0 < bucket_s <= window_s < baseline_s:
            raise ValueError("need 0 < bucket_s <= window_s < baseline_s")
        self.window_s, self.baseline_s, self.bucket_s = window_s, baseline_s, bucket_s
        self.min_count, self.max_keys, self.max_labels = min_count, max_keys, max_labels
        self._window_buckets = math.ceil(window_s / bucket_s)
        self._max_buckets = math.ceil(baseline_s / bucket_s) + self._window_buckets
        self._buckets: dict[tuple[str, str], deque[tuple[int, dict[str, int]]]] = {}
        self._lock = threading.Lock()

    def add(self, route: str, label_set: str, label: str, now: float | None = None) -> None:
        """Count one prediction whose top-scored label was `label`."""
        index = int((time.monotonic() if now is None else now) // self.bucket_s)
        key = (route, label_set)
        with self._lock:
            buckets = self._buckets.get(key)
            if buckets is None:
                if len(self._buckets) >= self.max_keys:
                    return  # bounded: routes and label sets come from config, this is a safety net
                buckets = self._buckets[key] = deque(maxlen=self._max_buckets)
            if not buckets or buckets[-1][0] != index:
                buckets.append((index, {}))
            counts = buckets[-1][1]
            if label not in counts and len(counts) >= self.max_labels:
                label = OTHER
            counts[label] = counts.get(label, 0) + 1

    def readings(self, now: float | None = None) -> list[ShareReading]:
        """The share of each pair's top label in the window (pairs with at least `min_count`)."""
        index = int((time.monotonic() if now is None else now) // self.bucket_s)
        window_from = index - self._window_buckets + 1
        baseline_from = window_from - math.ceil(self.baseline_s / self.bucket_s)
        with self._lock:
            copied = {key: list(buckets) for key, buckets in self._buckets.items()}
        out = []
        for (route, label_set), buckets in sorted(copied.items()):
            window: dict[str, int] = {}
            baseline: dict[str, int] = {}
            for bucket_index, counts in buckets:
                if bucket_index >= window_from:
                    target = window
                elif bucket_index >= baseline_from:
                    target = baseline
                else:
                    continue
                for label, n in counts.items():
                    target[label] = target.get(label, 0) + n
            total = sum(window.values())
            if total < self.min_count:
                continue
            label, top = max(window.items(), key=lambda kv: (kv[1], kv[0]))
            base_total = sum(baseline.values())
            base_share = baseline.get(label, 0) / base_total if base_total >= self.min_count else None
            out.append(ShareReading(route, label_set, label, top / total, total, base_share, base_total))
        return out


def from_env(env: Mapping[str, str]) -> TopLabelShare:
    """`GLICLASS_COLLAPSE_WINDOW_S` (300) and `GLICLASS_COLLAPSE_BASELINE_S` (3600); buckets of window/30."""
    values = []
    for name, default in (("GLICLASS_COLLAPSE_WINDOW_S", 300.0), ("GLICLASS_COLLAPSE_BASELINE_S", 3600.0)):
        raw = env.get(name, "").strip()
        try:
            value = float(raw) if raw else default
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, not {raw[:40]!r}") from None
        if not math.isfinite(value) or not 1 <= value <= 7 * 86400:
            raise ConfigError(f"{name} must be between 1 and 604800 seconds")
        values.append(value)
    window_s, baseline_s = values
    if baseline_s <= window_s:
        raise ConfigError("GLICLASS_COLLAPSE_BASELINE_S must be longer than GLICLASS_COLLAPSE_WINDOW_S")
    return TopLabelShare(window_s=window_s, baseline_s=baseline_s, bucket_s=window_s / 30)


def top_label(scores: dict[str, float]) -> str | None:
    """The highest-scored label (ties: the first given), or None without scores."""
    best: str | None = None
    best_score = -math.inf
    for label, score in scores.items():
        if score > best_score:
            best, best_score = label, score
    return best
