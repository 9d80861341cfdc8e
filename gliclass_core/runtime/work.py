"""What the scheduler tracks: a submitted item with its future, and the batches of passes it hands
to replicas. Plain records; the scheduler's lock guards their mutable fields.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.trace import SpanContext

from gliclass_core.runtime.batch_forming import BatchDecision, PendingPass, Priority
from gliclass_core.types import EncodedPass, ItemPlan, Prediction, PreparedItem


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
class SubmittedItem:
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

    item: SubmittedItem
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


class InFlight:
    """The batches handed to replicas and not yet completed or abandoned (scheduler's lock held)."""

    def __init__(self) -> None:
        self.count = 0
        self.bulk = 0
        #: When a bulk batch was last dispatched or completed (bulk was being served until then).
        self.last_bulk_at = float("-inf")
        self._running: dict[int, Batch] = {}

    def add(self, batch: Batch) -> None:
        if batch.decision.priority is Priority.BULK:
            self.last_bulk_at = batch.dispatched_at
            self.bulk += 1
        self.count += 1
        self._running[id(batch)] = batch

    def remove(self, batch: Batch) -> bool:
        """Forget `batch`; False when it was not in flight (abandoned already)."""
        if self._running.pop(id(batch), None) is None:
            return False
        self.count -= 1
        if batch.decision.priority is Priority.BULK:
            self.bulk -= 1
        return True
