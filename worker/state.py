"""What the loop's parts share: each consumed record's `Slot` and the `WorkerStats` counters.

`WorkerStats.snapshot()` is the thread-safe read side (the HTTP console, metrics, tests): an
immutable `WorkerStatsSnapshot` whose per-label and per-reason counts are bounded (top N plus
OTHER), so a snapshot costs the same however many distinct labels events bring.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import MappingProxyType

from gliclass_core.runtime.sessions.service import SessionAppend
from gliclass_core.runtime.sessions.store import SessionUpdate
from gliclass_core.types import ClassifyItem, Prediction
from worker.codec import BadEvent, Event, Source
from worker.config import Route
from worker.consumer import TP


@dataclass(eq=False)
class SessionSlot:
    """A record of a session route: the conversation it extends and its appends still to submit."""

    session_id: str  # the session service's id (partition and assignment included, see sessions.py)
    key: str  # the record key as text: the conversation's name in the output
    pending: list[SessionAppend]  # in order: replayed earlier records first, the record's own last
    rebuilt: bool = False  # earlier records of the conversation were replayed before this one
    future: Future[SessionUpdate] | None = None  # the record's own append, once submitted


@dataclass(eq=False)
class Slot:
    """One consumed record on its way to an output or dead-letter record."""

    tp: TP
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    route: Route
    received: float
    event: Event | None = None
    label_set: str | None = None
    item: ClassifyItem | None = None
    future: Future[Prediction] | None = None
    bad: BadEvent | None = None
    attempts: int = 0
    sends: int = 0  # times produced; a delivery report for an earlier copy is ignored
    in_flight: bool = False  # produced, delivery report not yet served (at-least-once)
    failed: bool = False  # its delivery failed; it is re-sent in order
    counted: str | None = None  # the outcome counted in WorkerStats: "scored" or "dead_lettered"
    trimmed: bool = False  # its dead letter was refused for good once and cut down to its headers
    session: SessionSlot | None = None  # set on a session route (`session = "key"`)

    @property
    def source(self) -> Source:
        return Source(self.tp[0], self.tp[1], self.offset)

    def ready(self) -> bool:
        if self.bad is not None:
            return True
        if self.session is not None:
            return self.session.future is not None and self.session.future.done()
        return self.future is not None and self.future.done()


#: Per route, the labels counted one by one (the most predicted); the rest add up under OTHER.
TOP_LABELS = 20
#: Routes with their own label counts; labels of routes beyond them add up under OTHER.
MAX_ROUTES = 32
#: Dead-letter reasons counted one by one (a fixed set in the code; bounded all the same).
TOP_REASONS = 32
#: The key the folded-together rest is reported under (parenthesised: it cannot clash with a
#: label, which the resolver takes as given, only by a label literally named "(other)").
OTHER = "(other)"

_COUNTERS = (
    "consumed",
    "scored",
    "dead_lettered",
    "delivered",
    "delivery_retries",
    "resent",
    "commits",
    "transactions",
    "aborts",
    "commit_retries",
    "pauses",
    "producer_restarts",
    "stalled_partitions",
    "assignments",
    "revokes",
    "revoked_unacked",
    "session_lookback_records",
    "session_replayed",
)


class TopCounter:
    """Counts per key in bounded memory: at most 2 * `keep` keys are held; when more arrive, all
    but the `keep` largest are folded into one count reported under OTHER.

    Exact for keys that stay among the largest; a key folded away starts again from zero if it
    comes back (its earlier counts stay in OTHER), so the total is always exact.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.other = 0
        self._counts: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        counts = self._counts
        counts[key] = counts.get(key, 0) + n
        if len(counts) > 2 * self.keep:
            ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
            self._counts = dict(ranked[: self.keep])
            self.other += sum(n for _, n in ranked[self.keep :])

    def __len__(self) -> int:
        return len(self._counts)

    def top(self) -> dict[str, int]:
        """The `keep` largest counts, largest first, plus OTHER for everything else (when any)."""
        ranked = heapq.nlargest(self.keep, self._counts.items(), key=lambda kv: kv[1])
        out = dict(ranked)
        rest = self.other + sum(self._counts.values()) - sum(out.values())
        if rest:
            out[OTHER] = out.get(OTHER, 0) + rest
        return out


@dataclass(frozen=True)
class WorkerStatsSnapshot:
    """A consistent, immutable copy of the worker's counters (safe to keep and read on any thread)."""

    consumed: int = 0
    scored: int = 0
    dead_lettered: int = 0
    delivered: int = 0
    delivery_retries: int = 0
    resent: int = 0
    commits: int = 0
    transactions: int = 0
    aborts: int = 0
    commit_retries: int = 0
    pauses: int = 0
    producer_restarts: int = 0
    #: Partitions that could not send at the last loop step (a failed delivery, a backoff).
    stalled_partitions: int = 0
    #: Rebalances seen: partitions assigned, partitions revoked (or lost), and records of revoked
    #: partitions still unacknowledged when they were given up (the new owner re-reads them: the
    #: bound on duplicates a rebalance causes in at-least-once mode).
    assignments: int = 0
    revokes: int = 0
    revoked_unacked: int = 0
    #: Session routes: records read back after assignments, and of those, appended again into the
    #: conversations they belong to (the recomputation rebalances cost).
    session_lookback_records: int = 0
    session_replayed: int = 0
    dead_letter_reasons: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    #: Per route (input topic): the TOP_LABELS most predicted labels, plus OTHER.
    predicted_labels: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: MappingProxyType({}))


class WorkerStats:
    """Counters since start: written by the loop thread only, read by any thread via `snapshot()`.

    Integer counters are plain attributes (one writer). Label and reason counts are bounded
    (`TopCounter`: top N plus OTHER; at most MAX_ROUTES routes) and guarded by a lock, so a
    snapshot taken on another thread never iterates a dict the loop is growing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        for name in _COUNTERS:
            setattr(self, name, 0)
        self._reasons = TopCounter(TOP_REASONS)
        self._labels: dict[str, TopCounter] = {}

    consumed: int
    scored: int
    dead_lettered: int
    delivered: int
    delivery_retries: int
    resent: int
    commits: int
    transactions: int
    aborts: int
    commit_retries: int
    pauses: int
    producer_restarts: int
    stalled_partitions: int
    assignments: int
    revokes: int
    revoked_unacked: int
    session_lookback_records: int
    session_replayed: int

    def count_labels(self, route: str, labels: Sequence[str]) -> None:
        """Count one prediction's labels for `route` (its input topic)."""
        with self._lock:
            counter = self._labels.get(route)
            if counter is None:
                if len(self._labels) >= MAX_ROUTES:
                    route = OTHER
                counter = self._labels.setdefault(route, TopCounter(TOP_LABELS))
            for label in labels:
                counter.add(label)

    def count_dead_letter(self, reason: str) -> None:
        with self._lock:
            self._reasons.add(reason)

    def held_keys(self) -> int:
        """How many keys the bounded counters hold right now (for tests of the bound)."""
        with self._lock:
            return len(self._reasons) + sum(len(c) for c in self._labels.values()) + len(self._labels)

    @property
    def dead_letter_reasons(self) -> Mapping[str, int]:
        return self.snapshot().dead_letter_reasons

    @property
    def predicted_labels(self) -> Mapping[str, Mapping[str, int]]:
        return self.snapshot().predicted_labels

    def snapshot(self) -> WorkerStatsSnapshot:
        """An immutable copy: the bounded counts taken under the lock, the integers as they are."""
        with self._lock:
            reasons = MappingProxyType(self._reasons.top())
            labels = MappingProxyType(
                {route: MappingProxyType(counter.top()) for route, counter in self._labels.items()}
            )
        counters = {name: getattr(self, name) for name in _COUNTERS}
        return WorkerStatsSnapshot(**counters, dead_letter_reasons=reasons, predicted_labels=labels)
