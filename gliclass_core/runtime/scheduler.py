"""The micro-batching scheduler: a bounded two-priority queue that replicas pull batches from.

Callers `submit` items and get one `concurrent.futures.Future` per item; asyncio code awaits
`classify`. `submit` only validates and plans (cheap Python, so it is fine on an event loop); the
texts are tokenized on the scheduler's intake thread, many submissions per Rust `encode_batch`
call (which releases the GIL), and their passes are queued from there. Replica threads call
`next_batch` (blocking) and `complete`. What goes into a batch is decided by the pure
`batching.form_batch`; this module only keeps the queue, the futures and the counters.

Futures are never resolved while the scheduler lock is held, because their callbacks run
user code (asyncio wake-ups, resubmissions) that may re-enter the scheduler.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry.trace import SpanContext

from gliclass_core.errors import (
    BatchFailed,
    DeadlineExceeded,
    GliclassError,
    InvalidInput,
    NotReady,
    Overloaded,
)
from gliclass_core.model import Model
from gliclass_core.runtime.batching import (
    BatchDecision,
    BatchPolicy,
    PendingPass,
    Priority,
    QueueState,
    form_batch,
)
from gliclass_core.runtime.bridge import deferred_wakeups, gather_futures
from gliclass_core.runtime.stats import SchedulerStats, StatsRecorder
from gliclass_core.runtime.tracing import capture_span_context
from gliclass_core.types import ClassifyItem, EncodedPass, ItemPlan, Prediction, PreparedItem

log = logging.getLogger(__name__)

#: One intake round tokenizes at most this many items, and bulk items only up to this many
#: characters, so an interactive item arriving meanwhile waits behind little tokenization.
_INTAKE_MAX_ITEMS = 512
_INTAKE_BULK_CHARS = 64_000


class TimedFuture(Future[Prediction]):
    """The future `submit` returns, carrying where its item's time went once it resolves.

    `queue_s`: seconds from `submit` until the item's first pass was dispatched to a replica.
    `compute_s`: wall seconds of the batches that computed its passes (summed when an item needed
    several passes). Both are set before the future resolves; None while queued or when the item
    never reached a replica (expired, cancelled, shut down).
    """

    def __init__(self) -> None:
        super().__init__()
        self.queue_s: float | None = None
        self.compute_s: float | None = None


@dataclass(eq=False)
class _Item:
    """One submitted item: its future and the logits of its passes as they arrive."""

    plan: ItemPlan
    future: TimedFuture
    priority: Priority
    enqueued_at: float
    deadline: float | None
    span_context: SpanContext | None
    logits: list[np.ndarray | None]
    remaining: int
    #: Set by the intake thread once the text is tokenized (or at submit for eager models).
    prepared: PreparedItem | None = None
    #: Rows reserved in the queue depth while the item waits for the intake thread.
    staged_rows: int = 0
    queued: set[int] = field(default_factory=set)
    started: bool = False
    done: bool = False


@dataclass(frozen=True)
class BatchEntry:
    """One row of a dispatched batch: which item, which of its passes."""

    item: _Item
    pass_index: int
    pending: PendingPass

    @property
    def encoded(self) -> EncodedPass:
        assert self.item.prepared is not None
        return self.item.prepared.passes[self.pass_index]


@dataclass(frozen=True)
class Batch:
    """A batch handed to a replica: its rows and the decision that formed it."""

    entries: tuple[BatchEntry, ...]
    decision: BatchDecision
    dispatched_at: float

    @property
    def passes(self) -> list[EncodedPass]:
        return [entry.encoded for entry in self.entries]

    @property
    def span_contexts(self) -> list[SpanContext | None]:
        return [entry.item.span_context for entry in self.entries]

    @property
    def real_tokens(self) -> int:
        return sum(entry.pending.num_tokens for entry in self.entries)

    @property
    def padded_tokens(self) -> int:
        return max(entry.pending.num_tokens for entry in self.entries) * len(self.entries)

    @property
    def max_queue_wait_s(self) -> float:
        return max(self.dispatched_at - entry.pending.enqueued_at for entry in self.entries)


class Scheduler:
    """Bounded, two-priority, deadline-aware micro-batching queue shared by every edge."""

    def __init__(
        self,
        policy: BatchPolicy,
        max_queue: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.max_queue = max_queue
        self._clock = clock
        lock = threading.Lock()  # not re-entrant: cheaper, and never re-entered
        self._cond = threading.Condition(lock)  # replicas wait here
        self._intake_cond = threading.Condition(lock)  # the intake thread waits here
        self._staged: dict[Priority, deque[_Item]] = {Priority.INTERACTIVE: deque(), Priority.BULK: deque()}
        self._staged_rows = {Priority.INTERACTIVE: 0, Priority.BULK: 0}
        self._intake: threading.Thread | None = None
        self._intake_round: list[_Item] = []  # items the intake thread is tokenizing right now
        self._queues: dict[Priority, dict[int, tuple[PendingPass, _Item, int]]] = {
            Priority.INTERACTIVE: {},
            Priority.BULK: {},
        }
        self._keys = itertools.count()
        self._depth = 0
        self._in_flight = 0
        self._idle = 0
        self._reserved = 0
        self._classifier: Model | None = None
        self._accepting = False
        self._draining = False
        self._closed = False
        self._last_interactive_at = float("-inf")
        self._last_bulk_dispatch_at = float("-inf")
        self._bulk_in_flight = 0
        self._running: dict[int, Batch] = {}  # dispatched, not yet completed or abandoned
        # Batch forming looks at the oldest passes only, so its cost does not grow with the queue.
        self._window = max(4 * policy.max_batch_size, 256)
        self._stats = StatsRecorder()

    # ----------------------------------------------------------------- lifecycle (Runtime)

    def open(self, classifier: Model, *, replicas: int, reserved_for_interactive: int = 0) -> None:
        """Start accepting work, prepared/finished by `classifier`, for `replicas` pulling threads."""
        with self._cond:
            self._classifier = classifier
            self._reserved = reserved_for_interactive if replicas > reserved_for_interactive else 0
            self._accepting = not self._closed
            if self._intake is None and not self._closed:
                self._intake = threading.Thread(target=self._intake_loop, name="gliclass-intake", daemon=True)
                self._intake.start()

    @property
    def accepting(self) -> bool:
        return self._accepting

    def close(self, grace_s: float = 10.0, *, drain: bool = True) -> int:
        """Stop accepting; let replicas drain the queue for up to `grace_s`; fail the rest.

        Returns how many queued items were failed with NotReady. In-flight batches are left to
        finish (the pool joins its threads after this).
        """
        end = self._clock() + grace_s
        with self._cond:
            self._accepting = False
            self._draining = True
            self._cond.notify_all()
            while drain and self._classifier is not None and self._depth > 0:
                remaining = end - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            leftovers = self._take_all()
            self._closed = True
            self._cond.notify_all()
            self._intake_cond.notify_all()
        intake = self._intake
        if intake is not None and intake is not threading.current_thread():
            # The intake thread returns once it sees `_closed` (a round it is tokenizing takes
            # milliseconds). Joined so that no thread is inside the Rust tokenizer while the
            # interpreter shuts down, which can abort the process after a clean stop.
            intake.join(timeout=5.0)
        for item in leftovers:
            _fail(item.future, NotReady("the scheduler shut down before this item was computed"))
        self._stats.count("failed_items", len(leftovers))
        return len(leftovers)

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
        `deadline` is an absolute `time.monotonic()` time. `span_contexts` (one per item) are
        what each item's batch span links to; by default every item links to the caller's span.
        """
        if span_contexts is not None and len(span_contexts) != len(items):
            raise ValueError(f"{len(span_contexts)} span contexts for {len(items)} items")
        classifier = self._classifier
        if classifier is None or not self._accepting:
            raise NotReady(
                "the model is not ready" if not self._draining else "the scheduler is shutting down"
            )
        priority = Priority(priority)
        if len(items) > self.max_queue:
            raise InvalidInput(
                f"{len(items)} items in one call; the queue holds at most {self.max_queue}", field="items"
            )
        if self._depth + len(items) > self.max_queue and (deadline is None or deadline > self._clock()):
            # Every valid item needs a pass: refuse before planning, so a caller retrying against a
            # full queue (the Kafka worker every few ms) does not validate its whole call each time.
            # (An unlocked read: the check under the lock below is the one that counts.)
            self._stats.count("rejected_items", len(items))
            raise Overloaded(f"queue full ({self._depth} of {self.max_queue} queued); retry later")
        plans = [classifier.plan(item, index) for index, item in enumerate(items)]
        contexts = span_contexts or [capture_span_context()] * len(items)
        rows = self._check_fits(plans)
        now = self._clock()
        expired_now = deadline is not None and deadline <= now
        futures: list[Future[Prediction]] = []
        tracked: list[_Item] = []
        with self._cond:
            if not self._accepting:
                raise NotReady("the scheduler is shutting down")
            if not expired_now and self._depth + rows > self.max_queue:
                self._stats.count("rejected_items", len(items))
                raise Overloaded(f"queue full ({self._depth} of {self.max_queue} queued); retry later")
            staged = self._staged[priority]
            for plan, span_context in zip(plans, contexts):
                future = TimedFuture()
                n = plan.num_passes
                item = _Item(plan, future, priority, now, deadline, span_context, [None] * n, n)
                futures.append(future)
                tracked.append(item)
                if expired_now or not n:
                    continue
                if plan.prepared is not None:  # tokenized already: straight into the queue
                    self._enqueue(item, plan.prepared)
                else:
                    item.staged_rows = n
                    self._staged_rows[priority] += n
                    staged.append(item)
            if not expired_now:
                self._depth += rows
                if priority is Priority.INTERACTIVE:
                    self._last_interactive_at = now
                if staged:
                    self._intake_cond.notify()
                self._cond.notify_all()
        self._stats.count("submitted_items", len(items))
        for item in tracked:
            if expired_now:
                self._stats.count("expired_items")
                _fail(item.future, DeadlineExceeded("the deadline had passed when the item was submitted"))
            elif not item.remaining:
                item.future.queue_s = item.future.compute_s = 0.0  # nothing to compute
                item.prepared = item.plan.prepared
                self._finish([item])
            else:
                item.future.add_done_callback(functools.partial(self._on_future_done, item))
        return futures

    def _check_fits(self, plans: Sequence[ItemPlan]) -> int:
        """Count the passes; InvalidInput (not Overloaded) for an item or call that could never fit."""
        for index, plan in enumerate(plans):
            if plan.num_passes > self.max_queue:
                raise InvalidInput(
                    f"its {len(plan.item.labels)} labels need {plan.num_passes} passes; "
                    f"the queue holds at most {self.max_queue}",
                    field="labels",
                    index=index,
                )
        rows = sum(plan.num_passes for plan in plans)
        if rows > self.max_queue:
            raise InvalidInput(
                f"the {len(plans)} items need {rows} passes; the queue holds at most {self.max_queue}",
                field="items",
            )
        return rows

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
        futures = self.submit(items, priority, deadline)  # no tokenization here: fine on the loop
        return await gather_futures(futures, return_exceptions=return_exceptions)

    def stats(self) -> SchedulerStats:
        """Snapshot every counter and the current queue depth."""
        with self._cond:
            depth_i = len(self._queues[Priority.INTERACTIVE]) + self._staged_rows[Priority.INTERACTIVE]
            depth_b = len(self._queues[Priority.BULK]) + self._staged_rows[Priority.BULK]
            in_flight = self._in_flight
        return self._stats.snapshot(depth_i, depth_b, in_flight)

    # ----------------------------------------------------------------- replicas

    def next_batch(self) -> Batch | None:
        """Block until a batch is due and return it; None once the scheduler is closed."""
        while True:
            expired: list[_Item] = []
            batch: Batch | None = None
            with self._cond:
                self._idle += 1
                try:
                    while batch is None and not expired:
                        if self._closed:
                            return None
                        now = self._clock()
                        decision = form_batch(
                            self._oldest(Priority.INTERACTIVE),
                            self._oldest(Priority.BULK),
                            self.policy,
                            self._state(now),
                        )
                        if decision.expired:
                            expired = self._take_expired(decision.expired)
                        if decision.batch:
                            batch = self._take_batch(decision, now)
                        if batch is None and not expired:
                            timeout = None if decision.wake_at is None else max(0.0, decision.wake_at - now)
                            self._cond.wait(timeout)
                finally:
                    self._idle -= 1
            try:
                for item in expired:
                    _fail(item.future, DeadlineExceeded("the deadline passed while the item was queued"))
                if expired:
                    self._stats.count("expired_items", len(expired))
            except BaseException as exc:
                if batch is not None:  # taken from the queue but never handed out: fail it, not lose it
                    self.abandon(batch, exc, "the scheduler")
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
        finished: list[_Item] = []
        failed: list[tuple[_Item, BaseException]] = []
        with self._cond:
            if self._running.pop(id(batch), None) is None:
                return  # abandoned: its items were failed already
            self._in_flight -= 1
            if batch.decision.priority is Priority.BULK:
                self._bulk_in_flight -= 1
                self._last_bulk_dispatch_at = self._clock()
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
                    self._unqueue(item)
                    failed.append((item, result))
                else:
                    item.logits[entry.pass_index] = result
                    item.remaining -= 1
                    if item.remaining == 0:
                        item.done = True
                        finished.append(item)
            if self._draining:
                self._cond.notify_all()
        self._stats.batch(
            device,
            len(batch.entries),
            batch.real_tokens,
            batch.padded_tokens,
            [batch.dispatched_at - entry.pending.enqueued_at for entry in batch.entries],
        )
        with deferred_wakeups():
            self._finish(finished)
            for item, exc in failed:
                _fail(item.future, _as_batch_failure(exc, device))
        if failed:
            self._stats.count("failed_items", len(failed))

    def abandon(self, batch: Batch, exc: BaseException, device: str) -> int:
        """Fail every unresolved item of `batch` after its replica faulted outside the batch's guard.

        Safe whether or not `complete` ran part-way first; a later `complete` of the batch is
        ignored. The items get `exc` as a BatchFailed (their other passes are dropped from the
        queue). Returns how many futures this failed.
        """
        items: dict[int, _Item] = {}
        with self._cond:
            if self._running.pop(id(batch), None) is not None:
                self._in_flight -= 1
                if batch.decision.priority is Priority.BULK:
                    self._bulk_in_flight -= 1
            for entry in batch.entries:
                item = entry.item
                item.done = True
                self._unqueue(item)
                items[id(item)] = item
            self._cond.notify_all()
        failure = _as_batch_failure(exc, f"{device} (the replica faulted outside the batch)")
        failed = sum(_fail(item.future, failure) for item in items.values())
        self._stats.count("failed_items", failed)
        return failed

    def record_compute(self, seconds: float) -> None:
        """Count the wall time of one forward pass (called by replicas)."""
        self._stats.compute(seconds)

    def record_oom_split(self) -> None:
        """Count one batch split after CUDA out-of-memory (called by replicas)."""
        self._stats.count("oom_splits")

    # ----------------------------------------------------------------- internals (lock held)

    def _state(self, now: float) -> QueueState:
        return QueueState(
            now=now,
            last_interactive_at=self._last_interactive_at,
            last_bulk_dispatch_at=self._last_bulk_dispatch_at,
            bulk_in_flight=self._bulk_in_flight,
            reserve_for_interactive=self._reserved > 0 and self._idle <= self._reserved,
            draining=self._draining,
        )

    def _oldest(self, priority: Priority) -> list[PendingPass]:
        queued = self._queues[priority].values()
        return [entry[0] for entry in itertools.islice(queued, self._window)]

    def _pop(self, pending: PendingPass) -> tuple[_Item, int] | None:
        entry = self._queues[pending.priority].pop(pending.key, None)
        if entry is None:
            return None
        self._depth -= 1
        entry[1].queued.discard(pending.key)
        return entry[1], entry[2]

    def _enqueue(self, item: _Item, prepared: PreparedItem) -> None:
        """Queue an item's passes (its rows are already counted in the depth)."""
        item.prepared = prepared
        queue = self._queues[item.priority]
        for index, encoded in enumerate(prepared.passes):
            key = next(self._keys)
            pending = PendingPass(key, encoded.num_tokens, item.priority, item.enqueued_at, item.deadline)
            queue[key] = (pending, item, index)
            item.queued.add(key)

    def _unstage(self, item: _Item) -> None:
        if item.staged_rows:
            self._depth -= item.staged_rows
            self._staged_rows[item.priority] -= item.staged_rows
            item.staged_rows = 0

    def _unqueue(self, item: _Item) -> None:
        self._unstage(item)
        for key in item.queued:
            if self._queues[item.priority].pop(key, None) is not None:
                self._depth -= 1
        item.queued.clear()

    def _take_expired(self, expired: Sequence[PendingPass]) -> list[_Item]:
        out = []
        for pending in expired:
            popped = self._pop(pending)
            if popped is None or popped[0].done:
                continue
            item = popped[0]
            item.done = True
            self._unqueue(item)
            out.append(item)
        return out

    def _take_batch(self, decision: BatchDecision, now: float) -> Batch | None:
        entries = []
        for pending in decision.batch:
            popped = self._pop(pending)
            if popped is None:
                continue
            item, index = popped
            if item.done:
                continue
            if not item.started:
                if not item.future.set_running_or_notify_cancel():
                    item.done = True  # cancelled between the check and now
                    self._unqueue(item)
                    continue
                item.started = True
            entries.append(BatchEntry(item, index, pending))
        if not entries:
            return None
        if decision.priority is Priority.BULK:
            self._last_bulk_dispatch_at = now
            self._bulk_in_flight += 1
        self._in_flight += 1
        batch = Batch(tuple(entries), decision, now)
        self._running[id(batch)] = batch
        return batch

    def _take_all(self) -> list[_Item]:
        items: dict[int, _Item] = {}
        for staged in (*self._staged.values(), self._intake_round):
            for item in staged:
                if not item.done:
                    item.done = True
                    item.staged_rows = 0
                    items[id(item)] = item
            staged.clear()
        self._staged_rows = {Priority.INTERACTIVE: 0, Priority.BULK: 0}
        for queue in self._queues.values():
            for _, item, _ in queue.values():
                if not item.done:
                    item.done = True
                    items[id(item)] = item
            queue.clear()
        self._depth = 0
        return list(items.values())

    # ----------------------------------------------------------------- internals (no lock)

    def _on_future_done(self, item: _Item, future: Future[Prediction]) -> None:
        if not future.cancelled():
            return
        with self._cond:
            was_queued = bool(item.queued) or item.staged_rows > 0
            item.done = True
            self._unqueue(item)
        if was_queued:
            self._stats.count("cancelled_items")

    def _take_staged(self) -> list[_Item]:
        """The next intake round: interactive items first, then bulk up to a character budget."""
        taken: list[_Item] = []
        chars = 0
        for priority in (Priority.INTERACTIVE, Priority.BULK):
            staged = self._staged[priority]
            while staged and len(taken) < _INTAKE_MAX_ITEMS:
                if priority is Priority.BULK and taken and chars >= _INTAKE_BULK_CHARS:
                    return taken
                item = staged.popleft()
                if not item.done:
                    taken.append(item)
                    chars += len(item.plan.item.text)
        return taken

    def _intake_loop(self) -> None:
        """Tokenize staged submissions in batches and queue their passes (the intake thread)."""
        while True:
            with self._cond:
                while not (self._staged[Priority.INTERACTIVE] or self._staged[Priority.BULK]):
                    if self._closed:
                        return
                    self._intake_cond.wait()
                taken = self._intake_round = self._take_staged()
                classifier = self._classifier
            if not taken or classifier is None:
                continue
            try:
                prepared = classifier.encode([item.plan for item in taken])
                error: BaseException | None = None
            except Exception as exc:  # a tokenizer bug, not bad input (plan checked that): fail the round
                log.exception("tokenizing %d items failed", len(taken))
                prepared, error = [], exc
            failed: list[_Item] = []
            with self._cond:
                for k, item in enumerate(taken):
                    if item.done:
                        continue  # cancelled or shut down while it was being tokenized
                    if error is not None:
                        item.done = True
                        self._unqueue(item)
                        failed.append(item)
                        continue
                    rows = item.staged_rows
                    self._staged_rows[item.priority] -= rows
                    item.staged_rows = 0
                    self._depth += len(prepared[k].passes) - rows
                    self._enqueue(item, prepared[k])
                self._intake_round = []
                self._cond.notify_all()
            for item in failed:
                assert error is not None
                _fail(item.future, _as_batch_failure(error, "tokenization"))
            if failed:
                self._stats.count("failed_items", len(failed))

    def _finish(self, items: Sequence[_Item]) -> None:
        """Post-process finished items in one vectorised step, then resolve their futures."""
        if not items:
            return
        classifier = self._classifier
        assert classifier is not None
        prepared = [item.prepared for item in items]
        logits = [[x for x in item.logits if x is not None] for item in items]
        try:
            outcomes: Sequence[Prediction | Exception] = classifier.finish_many(prepared, logits)  # type: ignore[arg-type]
        except Exception as exc:
            outcomes = [exc] * len(items)
        completed = 0
        with deferred_wakeups():  # one event-loop wake-up for the whole batch
            for item, outcome in zip(items, outcomes):
                if isinstance(outcome, Exception):
                    self._stats.count("failed_items")
                    _fail(item.future, _as_batch_failure(outcome, "post-processing"))
                    continue
                try:
                    item.future.set_result(outcome)
                except InvalidStateError:
                    continue
                completed += 1
        self._stats.count("completed_items", completed)


def _fail(future: Future[Any], exc: BaseException) -> bool:
    """Resolve `future` with `exc`; False when it was resolved (or cancelled) already."""
    try:
        future.set_exception(exc)
    except InvalidStateError:
        return False  # cancelled or already resolved: nobody is waiting for this outcome
    return True


def _as_batch_failure(exc: BaseException, where: str) -> BaseException:
    if isinstance(exc, GliclassError):
        return exc
    failure = BatchFailed(f"batch failed on {where}: {type(exc).__name__}: {exc}")
    failure.__cause__ = exc
    return failure
