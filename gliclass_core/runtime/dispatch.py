"""The replica side of the scheduler: form the next batch, hand it out, take its results back.

`Scheduler.next_batch`, `complete` and `abandon` come here. The dispatcher shares the scheduler's
lock (through its condition, where replicas wait) and its pass queue; it owns what batch forming
needs to know besides the queue (`QueueState`) and the batches in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from gliclass_core.errors import DeadlineExceeded
from gliclass_core.model import Model
from gliclass_core.runtime.batch_forming import BatchDecision, BatchPolicy, Priority, QueueState, form_batch
from gliclass_core.runtime.bridge import deferred_wakeups
from gliclass_core.runtime.completion import as_batch_failure, fail_future, finish_items
from gliclass_core.runtime.pass_queue import PassQueue
from gliclass_core.runtime.sessions.queue import SessionBatch, SessionQueue
from gliclass_core.runtime.stats import StatsRecorder
from gliclass_core.runtime.work import Batch, InFlight, SubmittedItem


class Dispatcher:
    """Hands formed batches to replica threads and resolves their items from the results."""

    def __init__(
        self,
        policy: BatchPolicy,
        cond: threading.Condition,
        passes: PassQueue,
        stats: StatsRecorder,
        clock: Callable[[], float],
        sessions: SessionQueue,
    ) -> None:
        self.policy = policy
        self.sessions = sessions
        self.in_flight = InFlight()
        #: Set by `Scheduler.submit`: while interactive traffic is recent, bulk batches are capped.
        self.last_interactive_at = float("-inf")
        self.draining = False  # shutting down: dispatch what is queued without waiting
        self.closed = False  # `next_batch` returns None from now on
        self._cond = cond  # replicas wait here; the scheduler's lock
        self._passes = passes
        self._stats = stats
        self._clock = clock
        self._classifier: Model | None = None
        self._reserved = 0
        self._idle = 0

    def open(self, classifier: Model, reserved_for_interactive: int) -> None:
        """Finish items with `classifier`; keep that many idle replicas for interactive work (lock held)."""
        self._classifier = classifier
        self._reserved = reserved_for_interactive

    def next_batch(self, replica: int | None = None) -> Batch | SessionBatch | None:
        """Block until a batch is due and return it; None once the scheduler is closed.

        With `replica` (its index), the replica's session batches are handed out too
        (`SessionQueue.take` decides between a session batch and the pass batch formed here).
        """
        passes = self._passes
        while True:
            expired: list[SubmittedItem] = []
            batch: Batch | SessionBatch | None = None
            with self._cond:
                self._idle += 1
                try:
                    while batch is None and not expired:
                        if self.closed:
                            return None
                        now = self._clock()
                        decision = form_batch(
                            passes.oldest(Priority.INTERACTIVE),
                            passes.oldest(Priority.BULK),
                            self.policy,
                            self._state(now),
                        )
                        if decision.expired:
                            expired = passes.take_expired(decision.expired)
                        wake_at = decision.wake_at
                        if replica is not None:
                            batch = self._take_sessions(replica, decision, now)
                            wake_at = _earliest(wake_at, self.sessions.wake_at(replica))
                        if batch is None and decision.batch:
                            batch = self._take_batch(decision, now)
                        if batch is None and not expired:
                            timeout = None if wake_at is None else max(0.0, wake_at - now)
                            self._cond.wait(timeout)
                finally:
                    self._idle -= 1
            try:
                for item in expired:
                    fail_future(
                        item.future, DeadlineExceeded("the deadline passed while the item was queued")
                    )
                if expired:
                    self._stats.count("expired_items", len(expired))
            except BaseException as exc:
                # Taken from the queue but never handed out: fail it, not lose it.
                if isinstance(batch, Batch):
                    self.abandon(batch, exc, "the scheduler")
                elif batch is not None:
                    self.sessions.abandon(batch, exc)
                raise
            if batch is not None:
                return batch

    def complete(
        self,
        batch: Batch,
        results: Sequence[np.ndarray | BaseException],
        device: str,
        *,
        compute_s: float | None = None,
    ) -> None:
        """Deliver a computed batch: logits (or the exception) per row, in batch order.

        `compute_s` is the batch's wall time on the replica (default: since it was dispatched);
        each item's future gets its queue and compute seconds (see `TimedFuture`) before resolving.
        """
        if compute_s is None:
            compute_s = max(0.0, self._clock() - batch.dispatched_at)
        finished: list[SubmittedItem] = []
        failed: list[tuple[SubmittedItem, BaseException]] = []
        with self._cond:
            if not self.in_flight.remove(batch):
                return  # abandoned: its items were failed already
            if batch.decision.priority is Priority.BULK:
                self.in_flight.last_bulk_at = self._clock()
            for entry, result in zip(batch.entries, results):
                item = entry.item
                if item.done:
                    continue
                future = item.future
                if future.queue_s is None:
                    future.queue_s = max(0.0, batch.dispatched_at - item.enqueued_at)
                future.compute_s = (future.compute_s or 0.0) + compute_s
                if isinstance(result, BaseException):
                    item.done = True
                    self._passes.unqueue(item)
                    failed.append((item, result))
                else:
                    item.logits[entry.pass_index] = result
                    item.remaining -= 1
                    if item.remaining == 0:
                        item.done = True
                        finished.append(item)
            if self.draining:
                self._cond.notify_all()
        self._stats.batch(
            device,
            len(batch.entries),
            batch.real_tokens,
            batch.padded_tokens,
            [batch.dispatched_at - entry.pending.enqueued_at for entry in batch.entries],
        )
        with deferred_wakeups():
            finish_items(self._classifier, finished, self._stats)
            for item, exc in failed:
                fail_future(item.future, as_batch_failure(exc, device))
        if failed:
            self._stats.count("failed_items", len(failed))

    def abandon(self, batch: Batch, exc: BaseException, device: str) -> int:
        """Fail every unresolved item of `batch` after its replica faulted outside the batch's guard.

        Safe whether or not `complete` ran part-way first; a later `complete` of the batch is
        ignored. The items get `exc` as a BatchFailed (their other passes are dropped from the
        queue). Returns how many futures this failed.
        """
        items: dict[int, SubmittedItem] = {}
        with self._cond:
            self.in_flight.remove(batch)
            for entry in batch.entries:
                item = entry.item
                item.done = True
                self._passes.unqueue(item)
                items[id(item)] = item
            self._cond.notify_all()
        failure = as_batch_failure(exc, f"{device} (the replica faulted outside the batch)")
        failed = sum(fail_future(item.future, failure) for item in items.values())
        self._stats.count("failed_items", failed)
        return failed

    def _state(self, now: float) -> QueueState:
        return QueueState(
            now=now,
            last_interactive_at=self.last_interactive_at,
            last_bulk_dispatch_at=self.in_flight.last_bulk_at,
            bulk_in_flight=self.in_flight.bulk,
            reserve_for_interactive=self._reserved > 0 and self._idle <= self._reserved,
            draining=self.draining,
        )

    def _take_sessions(self, replica: int, decision: BatchDecision, now: float) -> SessionBatch | None:
        """The replica's session batch when one is due before the pass batch decided (lock held)."""
        oldest = min((p.enqueued_at for p in decision.batch), default=None)
        return self.sessions.take(replica, now, decision.priority if decision.batch else None, oldest)

    def _take_batch(self, decision: BatchDecision, now: float) -> Batch | None:
        """Take the decided batch out of the queue and count it in flight (lock held)."""
        entries = self._passes.take_batch(decision.batch)
        if not entries:
            return None
        batch = Batch(tuple(entries), decision, now)
        self.in_flight.add(batch)
        return batch


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)
