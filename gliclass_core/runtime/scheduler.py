"""The micro-batching scheduler: a bounded two-priority queue that replicas pull batches from.

Callers `submit` items and get one `concurrent.futures.Future` per item; asyncio code awaits
`classify`. `submit` only validates and plans (cheap Python, so it is fine on an event loop); the
texts are tokenized on the scheduler's intake thread (`intake`), many submissions per Rust
`encode_batch` call (which releases the GIL), and their passes are queued from there
(`pass_queue`). Replica threads call `next_batch` (blocking) and `complete`, which the dispatcher
serves (`dispatch`); what goes into a batch is decided by the pure `batch_forming.form_batch`.
This module keeps the lifecycle and admission; all of them share the scheduler's one lock.

Futures are never resolved while the scheduler lock is held, because their callbacks run
user code (asyncio wake-ups, resubmissions) that may re-enter the scheduler.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
from opentelemetry.trace import SpanContext

from gliclass_core.errors import DeadlineExceeded, InvalidInput, NotReady, Overloaded
from gliclass_core.model import Model
from gliclass_core.runtime.batch_forming import BatchPolicy, Priority
from gliclass_core.runtime.bridge import gather_futures
from gliclass_core.runtime.completion import fail_future, finish_items
from gliclass_core.runtime.dispatch import Dispatcher
from gliclass_core.runtime.intake import Intake
from gliclass_core.runtime.pass_queue import PassQueue
from gliclass_core.runtime.sessions.batch import fail_all, shutdown_error
from gliclass_core.runtime.sessions.queue import QueuedSessionWork, SessionBatch, SessionQueue
from gliclass_core.runtime.sessions.store import SessionStore
from gliclass_core.runtime.sessions.strategies import Strategy
from gliclass_core.runtime.stats import SchedulerStats, StatsRecorder
from gliclass_core.runtime.supervision import OnStopped
from gliclass_core.runtime.tracing import capture_span_context
from gliclass_core.runtime.work import Batch, SubmittedItem, TimedFuture
from gliclass_core.types import ClassifyItem, Prediction

#: Above this many characters of text in one call, `submit_async` plans in a worker thread. Planning
#: tokenizes long_text="chunk" items and encoder-decoder rows on the caller's thread (other items are
#: tokenized by the intake thread), and an event loop must not spend a second doing that.
INLINE_PLAN_CHARS = 20_000


def _cancel_planned(planned: asyncio.Future[list[Future[Prediction]]]) -> None:
    if not planned.cancelled() and planned.exception() is None:
        for future in planned.result():
            future.cancel()


class Scheduler:
    """Bounded, two-priority, deadline-aware micro-batching queue shared by every edge."""

    def __init__(
        self,
        policy: BatchPolicy,
        max_queue: int,
        *,
        bulk_queue_share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.max_queue = max_queue
        #: Rows bulk items may hold at most (`[batching] bulk_queue_share` of `max_queue`): the rest
        #: of the queue stays free for interactive calls however much Kafka backlog there is.
        self.bulk_limit = max(1, min(max_queue, int(max_queue * bulk_queue_share)))
        self._clock = clock
        lock = threading.Lock()  # not re-entrant: cheaper, and never re-entered
        self._cond = threading.Condition(lock)  # replicas wait here
        self._stats = StatsRecorder()
        self._passes = PassQueue(max_queue, window=max(4 * policy.max_batch_size, 256))
        self._intake = Intake(lock, self._cond, self._passes, self._stats)
        #: Streaming sessions' appends and closes, batched per replica (`sessions.queue`).
        self.sessions = SessionQueue(self._cond, policy.max_batch_size, clock)
        self._dispatch = Dispatcher(policy, self._cond, self._passes, self._stats, clock, self.sessions)
        self._classifier: Model | None = None
        self._accepting = False

    # ----------------------------------------------------------------- lifecycle (Runtime)

    def open(self, classifier: Model, *, replicas: int, reserved_for_interactive: int = 0) -> None:
        """Start accepting work, prepared/finished by `classifier`, for `replicas` pulling threads."""
        with self._cond:
            self._classifier = classifier
            reserved = reserved_for_interactive if replicas > reserved_for_interactive else 0
            self._dispatch.open(classifier, reserved)
            self._accepting = not self._dispatch.closed
            self._intake.open(classifier)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def on_thread_stopped(self, handler: OnStopped) -> None:
        """Call `handler(thread, faults, error)` if the intake thread stops after repeated faults."""
        self._intake.on_stopped = handler

    @property
    def intake_faults(self) -> int:
        """Faults of the intake thread since start (each failed only the round it held)."""
        return self._intake.faults

    def close(self, grace_s: float = 10.0, *, drain: bool = True) -> int:
        """Stop accepting; let replicas drain the queue for up to `grace_s`; fail the rest.

        Returns how many queued items (and session appends) were failed with NotReady. In-flight
        batches are left to finish (the pool joins its threads after this).
        """
        end = self._clock() + grace_s
        with self._cond:
            self._accepting = False
            self._dispatch.draining = True
            self._cond.notify_all()
            while drain and self._classifier is not None and self._passes.depth + self.sessions.depth > 0:
                remaining = end - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            leftovers = {id(item): item for item in self._intake.close()}
            leftovers.update((id(item), item) for item in self._passes.take_all())
            session_leftovers = self.sessions.take_all()
            self._dispatch.closed = True
            self._cond.notify_all()
        self._intake.join(timeout=5.0)
        for item in leftovers.values():
            fail_future(item.future, NotReady("the scheduler shut down before this item was computed"))
        self._stats.count("failed_items", len(leftovers))
        fail_all(session_leftovers, shutdown_error())
        return len(leftovers) + len(session_leftovers)

    # ----------------------------------------------------------------- callers

    def submit(
        self,
        items: Sequence[ClassifyItem],
        priority: Priority = Priority.INTERACTIVE,
        deadline: float | None = None,
        *,
        span_contexts: Sequence[SpanContext | None] | None = None,
    ) -> list[Future[Prediction]]:
        """Queue items; return one future per item, in order.

        Raises (enqueuing nothing) InvalidInput naming the item (also when an item, or the call,
        needs more passes than the whole queue holds: it could never fit), Overloaded when the
        queue has no room for all of them now (checked first against one pass per item, before
        anything is tokenized or validated), NotReady before warm-up or after shutdown began.
        Bulk items may hold only `bulk_limit` rows of the queue (the rest is kept for interactive
        work): for them both "the queue" and "room" mean that share.
        `deadline` is an absolute `time.monotonic()` time. `span_contexts` (one per item) are
        what each item's batch span links to; by default every item links to the caller's span.
        """
        if span_contexts is not None and len(span_contexts) != len(items):
            raise ValueError(f"{len(span_contexts)} span contexts for {len(items)} items")
        classifier = self._classifier
        if classifier is None or not self._accepting:
            raise NotReady(
                "the model is not ready" if not self._dispatch.draining else "the scheduler is shutting down"
            )
        priority = Priority(priority)
        limit = self.max_queue if priority is Priority.INTERACTIVE else self.bulk_limit
        if len(items) > limit:
            raise InvalidInput(
                f"{len(items)} items in one call; the queue holds at most {limit}", field="items"
            )
        passes = self._passes
        if self._full(priority, len(items)) and (deadline is None or deadline > self._clock()):
            # Every valid item needs a pass: refuse before planning, so a caller retrying against a
            # full queue (the Kafka worker every few ms) does not validate its whole call each time.
            # (An unlocked read: the check under the lock below is the one that counts.)
            self._stats.count("rejected_items", len(items))
            raise Overloaded(self._full_message(priority))
        plans = [classifier.plan(item, index) for index, item in enumerate(items)]
        contexts = span_contexts or [capture_span_context()] * len(items)
        rows = passes.check_fits(plans, limit)
        now = self._clock()
        expired_now = deadline is not None and deadline <= now
        futures: list[Future[Prediction]] = []
        tracked: list[SubmittedItem] = []
        staged: list[SubmittedItem] = []
        staged_rows = 0
        with self._cond:
            if not self._accepting:
                raise NotReady("the scheduler is shutting down")
            if not expired_now and self._full(priority, rows):
                self._stats.count("rejected_items", len(items))
                raise Overloaded(self._full_message(priority))
            for plan, span_context in zip(plans, contexts):
                future = TimedFuture()
                n = plan.num_passes
                item = SubmittedItem(plan, future, priority, now, deadline, span_context, [None] * n, n)
                futures.append(future)
                tracked.append(item)
                if expired_now or not n:
                    continue
                if plan.prepared is not None:  # tokenized already: straight into the queue
                    passes.enqueue(item, plan.prepared)
                else:
                    item.staged_rows = n
                    staged_rows += n
                    staged.append(item)
            if not expired_now:
                passes.depth += rows
                passes.reserved[priority] += staged_rows
                if priority is Priority.INTERACTIVE:
                    self._dispatch.last_interactive_at = now
                self._intake.stage(priority, staged)
                self._cond.notify_all()
        self._stats.count("submitted_items", len(items))
        for item in tracked:
            if expired_now:
                self._stats.count("expired_items")
                fail_future(
                    item.future, DeadlineExceeded("the deadline had passed when the item was submitted")
                )
            elif not item.remaining:
                item.future.queue_s = item.future.compute_s = 0.0  # nothing to compute
                item.prepared = item.plan.prepared
                finish_items(self._classifier, [item], self._stats)
            else:
                item.future.add_done_callback(functools.partial(self._on_future_done, item))
        return futures

    async def classify(
        self,
        items: Sequence[ClassifyItem],
        priority: Priority = Priority.INTERACTIVE,
        deadline: float | None = None,
        *,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Awaitable `submit`: the predictions in order. Cancelling the task cancels queued items.

        With `return_exceptions`, a failed item's slot holds its exception instead of raising.
        """
        futures = await self.submit_async(items, priority, deadline)
        return await gather_futures(futures, return_exceptions=return_exceptions)

    async def submit_async(
        self,
        items: Sequence[ClassifyItem],
        priority: Priority = Priority.INTERACTIVE,
        deadline: float | None = None,
    ) -> list[Future[Prediction]]:
        """`submit` for an event loop: a call of over INLINE_PLAN_CHARS characters is planned in a
        worker thread, so chunked long texts and encoder-decoder rows are not tokenized on the loop."""
        if sum(len(item.text) for item in items) <= INLINE_PLAN_CHARS:
            return self.submit(items, priority, deadline)
        planned = asyncio.ensure_future(asyncio.to_thread(self.submit, items, priority, deadline))
        try:
            return await asyncio.shield(planned)
        except asyncio.CancelledError:
            # The thread cannot be stopped; what it queues for a cancelled caller is dropped when it ends.
            planned.add_done_callback(_cancel_planned)
            raise

    def attach_sessions(self, stores: Sequence[SessionStore], default_strategy: Strategy) -> None:
        """Batch session work for these stores, one per replica in the pool's order."""
        with self._cond:
            self.sessions.attach(stores, default_strategy)

    def submit_session_work(
        self, entries: Sequence[QueuedSessionWork], priority: Priority, *, bounded: bool = True
    ) -> None:
        """Queue session appends / closes (`sessions.queue`), counted against the queue like passes.

        Raises (queuing nothing) InvalidInput when the call alone is larger than its priority's
        share of the queue, Overloaded when there is no room for it now (unless not `bounded`),
        NotReady after shutdown began.
        """
        limit = self.max_queue if priority is Priority.INTERACTIVE else self.bulk_limit
        if len(entries) > limit:
            raise InvalidInput(
                f"{len(entries)} session appends in one call; the queue holds at most {limit}",
                field="session_id",
            )
        with self._cond:
            if not self._accepting:
                raise NotReady("the scheduler is shutting down" if self._dispatch.draining else "not ready")
            if bounded and self._full(priority, len(entries)):
                raise Overloaded(self._full_message(priority))
            self.sessions.enqueue(entries)
            self._cond.notify_all()

    def stats(self) -> SchedulerStats:
        """Snapshot every counter and the current queue depth."""
        with self._cond:
            depth_i = self._passes.depth_of(Priority.INTERACTIVE)
            depth_b = self._passes.depth_of(Priority.BULK)
            in_flight = self._dispatch.in_flight.count
        return self._stats.snapshot(depth_i, depth_b, in_flight)

    # ----------------------------------------------------------------- replicas (see `dispatch`)

    def next_batch(self, replica: int | None = None) -> Batch | SessionBatch | None:
        """Block until a batch is due and return it; None once the scheduler is closed.

        `replica` (its index in the pool) also gets that replica's session batches.
        """
        return self._dispatch.next_batch(replica)

    def complete(
        self,
        batch: Batch,
        results: Sequence[np.ndarray | BaseException],
        device: str,
        *,
        compute_s: float | None = None,
    ) -> None:
        """Deliver a computed batch: logits (or the exception) per row (`Dispatcher.complete`)."""
        self._dispatch.complete(batch, results, device, compute_s=compute_s)

    def abandon(self, batch: Batch, exc: BaseException, device: str) -> int:
        """Fail the items of a faulted replica's batch; how many it failed (`Dispatcher.abandon`)."""
        return self._dispatch.abandon(batch, exc, device)

    def record_compute(self, seconds: float, device: str = "") -> None:
        """Count the wall time of one forward pass on `device` (called by replicas)."""
        self._stats.compute(seconds, device)

    def record_oom_split(self) -> None:
        """Count one batch split after CUDA out-of-memory (called by replicas)."""
        self._stats.count("oom_splits")

    # ----------------------------------------------------------------- internals

    def _full(self, priority: Priority, rows: int) -> bool:
        """True when `rows` more rows of `priority` do not fit now (bulk: within its share too)."""
        passes, sessions = self._passes, self.sessions
        if passes.depth + sessions.depth + rows > self.max_queue:
            return True
        bulk = passes.depth_of(Priority.BULK) + sessions.depth_of(Priority.BULK)
        return priority is Priority.BULK and bulk + rows > self.bulk_limit

    def _full_message(self, priority: Priority) -> str:
        depth = self._passes.depth + self.sessions.depth
        if priority is Priority.BULK and depth + 1 <= self.max_queue:
            bulk = self._passes.depth_of(Priority.BULK) + self.sessions.depth_of(Priority.BULK)
            return (
                f"queue full for bulk work ({bulk} of its "
                f"{self.bulk_limit} rows queued; the rest is kept for interactive calls); retry later"
            )
        return f"queue full ({depth} of {self.max_queue} queued); retry later"

    def _on_future_done(self, item: SubmittedItem, future: Future[Prediction]) -> None:
        # A future is resolved from outside the scheduler when its caller cancels it, or fails it
        # with DeadlineExceeded at the deadline (`gliclass_core.service.calls`): drop the item's
        # queued passes, and mark it done so a batch computing it now discards its results.
        if future.cancelled():
            with self._cond:
                was_queued = bool(item.queued) or item.staged_rows > 0
                item.done = True
                self._passes.unqueue(item)
            if was_queued:
                self._stats.count("cancelled_items")
            return
        if not isinstance(future.exception(), DeadlineExceeded):
            return
        with self._cond:
            if item.done:
                return  # expired by batch forming, which counted it
            item.done = True
            self._passes.unqueue(item)
        self._stats.count("expired_items")
