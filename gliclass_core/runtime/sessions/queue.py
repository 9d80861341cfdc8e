"""The scheduler's queue of session work: appends and closes waiting for their replica's next batch.

Every session is pinned to one replica (a stable hash of its id, `replica_of`), whose
`SessionStore` holds its cache, so its chunks always extend the same state. Each replica has its
own queue in submission order. A session batch (`take`) is the oldest waiting entry of up to
`max_batch_size` distinct sessions of one priority (interactive before bulk, as for passes);
an entry waits while an earlier one of its session is queued or running, so each session's
appends and closes apply strictly in submission order whichever call they came from.

Entries count against the scheduler's `max_queue` (and bulk ones against `bulk_limit`) beside the
passes; the scheduler checks that before `enqueue`. An entry whose deadline passed, or whose
caller cancelled it, is dropped when its replica next looks, without touching its session.
Every method is called with the scheduler's lock held (`complete` takes it itself); futures are
resolved by the replica thread outside that lock (`sessions.batch`).
"""

from __future__ import annotations

import threading
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from gliclass_core.runtime.batch_forming import Priority
from gliclass_core.runtime.calls import CancelSignal
from gliclass_core.runtime.completion import as_batch_failure, fail_future
from gliclass_core.runtime.sessions.service import SessionAppend
from gliclass_core.runtime.sessions.store import SessionStore
from gliclass_core.runtime.sessions.strategies import Strategy

#: Idle sessions are expired at least this often (and at half their TTL when that is shorter).
EXPIRE_EVERY_S = 30.0
MIN_EXPIRE_EVERY_S = 0.05


def replica_of(session_id: str, replicas: int) -> int:
    """The replica a session lives on: the same for an id in every process (crc32, not `hash`)."""
    return zlib.crc32(session_id.encode("utf-8", "surrogatepass")) % replicas


@dataclass(eq=False)
class QueuedSessionWork:
    """One append (or, with `append` None, a close) of one session, waiting or running."""

    session_id: str
    append: SessionAppend | None
    future: Future[Any]
    priority: Priority
    enqueued_at: float
    deadline: float | None = None
    cancel: CancelSignal | None = None
    queued: bool = False  # waiting in its replica's queue (not yet taken, dropped or forgotten)

    def stale(self, now: float) -> bool:
        """True when it must not start: resolved from outside, cancelled, or past its deadline."""
        cancelled = self.cancel is not None and self.cancel.is_set
        return self.future.done() or cancelled or (self.deadline is not None and self.deadline <= now)


@dataclass(frozen=True)
class SessionBatch:
    """Work for one replica: distinct sessions' entries to run as one batch, entries to fail
    unstarted (`dropped`), and whether to expire idle sessions first (`expire`)."""

    replica: int
    store: SessionStore
    default_strategy: Strategy
    entries: tuple[QueuedSessionWork, ...]
    dropped: tuple[QueuedSessionWork, ...]
    expire: bool
    dispatched_at: float

    @property
    def session_ids(self) -> list[str]:
        return [entry.session_id for entry in self.entries]


class SessionQueue:
    """Per-replica queues of session work, bounded by the scheduler (see module)."""

    def __init__(self, cond: threading.Condition, max_batch_size: int, clock: Callable[[], float]) -> None:
        self._cond = cond
        self.max_batch_size = max_batch_size
        self._clock = clock
        self._stores: list[SessionStore] = []
        self._default_strategy = Strategy()
        self._queues: list[deque[QueuedSessionWork]] = []
        self._running: list[set[str]] = []
        self._next_expiry: list[float] = []
        self._expire_every = EXPIRE_EVERY_S
        self._depth = {Priority.INTERACTIVE: 0, Priority.BULK: 0}

    def attach(self, stores: Sequence[SessionStore], default_strategy: Strategy) -> None:
        """Serve these stores, one per replica in the pool's order (lock held)."""
        self._stores = list(stores)
        self._default_strategy = default_strategy
        self._queues = [deque() for _ in self._stores]
        self._running = [set() for _ in self._stores]
        ttl = min((store.limits.idle_ttl_s for store in self._stores), default=EXPIRE_EVERY_S)
        self._expire_every = max(MIN_EXPIRE_EVERY_S, min(EXPIRE_EVERY_S, ttl / 2))
        now = self._clock()
        self._next_expiry = [now + self._expire_every for _ in self._stores]

    @property
    def stores(self) -> list[SessionStore]:
        return list(self._stores)

    @property
    def depth(self) -> int:
        """Entries queued (not yet taken into a batch), both priorities."""
        return self._depth[Priority.INTERACTIVE] + self._depth[Priority.BULK]

    def depth_of(self, priority: Priority) -> int:
        return self._depth[priority]

    def enqueue(self, entries: Sequence[QueuedSessionWork]) -> None:
        """Queue entries behind their sessions' earlier ones (lock held; room checked by the caller)."""
        replicas = len(self._stores)
        for entry in entries:
            self._queues[replica_of(entry.session_id, replicas)].append(entry)
            self._depth[entry.priority] += 1
            entry.queued = True

    def forget(self, entry: QueuedSessionWork) -> None:
        """Take out an entry whose future was resolved from outside (deadline, cancellation) while
        it waits, so it stops holding room in the queue (takes the lock; a no-op once it left)."""
        with self._cond:
            if entry.queued:
                self._remove(replica_of(entry.session_id, len(self._queues)), [entry])

    def take(
        self, replica: int, now: float, pass_priority: Priority | None, pass_oldest_at: float | None
    ) -> SessionBatch | None:
        """The replica's next session batch, or None when it has none due (lock held).

        `pass_priority` / `pass_oldest_at` describe the pass batch the replica would take
        otherwise: session work of a more urgent priority wins, of the same priority when older.
        """
        if replica >= len(self._stores):
            return None
        queue = self._queues[replica]
        dropped = [entry for entry in queue if entry.stale(now)]
        if dropped:
            self._remove(replica, dropped)
        chosen: list[QueuedSessionWork] = []
        for priority in Priority:
            if pass_priority is not None and (
                pass_priority < priority
                or (pass_priority == priority and pass_oldest_at is not None and not self._older(
                    replica, priority, pass_oldest_at))
            ):  # fmt: skip
                break
            chosen = self._pick(replica, priority)
            if chosen:
                break
        self._remove(replica, chosen)
        expire = now >= self._next_expiry[replica]
        if expire:
            self._next_expiry[replica] = now + self._expire_every
        if not chosen and not dropped and not expire:
            return None
        self._running[replica].update(entry.session_id for entry in chosen)
        return SessionBatch(
            replica, self._stores[replica], self._default_strategy, tuple(chosen), tuple(dropped), expire, now
        )

    def wake_at(self, replica: int) -> float | None:
        """When the replica must look again without new work: its next expiry (lock held)."""
        return self._next_expiry[replica] if replica < len(self._next_expiry) else None

    def complete(self, batch: SessionBatch) -> None:
        """The batch's sessions may run again (takes the lock)."""
        with self._cond:
            self._running[batch.replica].difference_update(batch.session_ids)
            self._cond.notify_all()

    def abandon(self, batch: SessionBatch, exc: BaseException, where: str = "the scheduler") -> int:
        """Fail the batch's unresolved entries after a fault outside its guard (takes the lock; the
        sessions may run again). Returns how many it failed."""
        self.complete(batch)
        failure = as_batch_failure(exc.with_traceback(None), where)
        return sum(fail_future(entry.future, failure) for entry in (*batch.entries, *batch.dropped))

    def take_all(self) -> list[QueuedSessionWork]:
        """Empty every queue (shutdown): the entries to fail (lock held)."""
        out = [entry for queue in self._queues for entry in queue]
        for queue in self._queues:
            queue.clear()
        for entry in out:
            entry.queued = False
        self._depth = {Priority.INTERACTIVE: 0, Priority.BULK: 0}
        return out

    # -- internals ------------------------------------------------------------------------------------
    def _pick(self, replica: int, priority: Priority) -> list[QueuedSessionWork]:
        """Oldest entry of up to `max_batch_size` distinct sessions, none running or behind another."""
        seen = set(self._running[replica])
        picked: list[QueuedSessionWork] = []
        for entry in self._queues[replica]:
            if entry.session_id in seen:
                continue  # running, or an earlier entry of its session is queued: it waits
            seen.add(entry.session_id)
            if entry.priority is priority:
                picked.append(entry)
                if len(picked) == self.max_batch_size:
                    break
        return picked

    def _older(self, replica: int, priority: Priority, than: float) -> bool:
        first = next((e for e in self._queues[replica] if e.priority is priority), None)
        return first is not None and first.enqueued_at <= than

    def _remove(self, replica: int, entries: Sequence[QueuedSessionWork]) -> None:
        if not entries:
            return
        gone = {id(entry) for entry in entries}
        self._queues[replica] = deque(e for e in self._queues[replica] if id(e) not in gone)
        for entry in entries:
            self._depth[entry.priority] -= 1
            entry.queued = False
