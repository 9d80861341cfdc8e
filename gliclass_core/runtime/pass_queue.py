"""The scheduler's bounded queue: passes waiting for a replica, per priority, oldest first.

Its depth counts queued passes plus the rows reserved for items still waiting for the intake
thread, so both count against `max_queue`. It has no lock of its own: every method but
`check_fits` (which reads only the bound) is called with the scheduler's lock held.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from gliclass_core.errors import InvalidInput
from gliclass_core.runtime.batch_forming import PendingPass, Priority
from gliclass_core.runtime.work import BatchEntry, SubmittedItem
from gliclass_core.types import ItemPlan, PreparedItem


class PassQueue:
    """Queued passes of both priorities, plus the rows reserved for items being tokenized."""

    def __init__(self, max_queue: int, window: int) -> None:
        self.max_queue = max_queue
        #: Rows counted against `max_queue`: queued passes plus reserved rows.
        self.depth = 0
        # Insertion-ordered, so the first entries are the oldest passes.
        self._queues: dict[Priority, dict[int, tuple[PendingPass, SubmittedItem, int]]] = {
            Priority.INTERACTIVE: {},
            Priority.BULK: {},
        }
        #: Rows of staged items, per priority (`Scheduler.submit` adds them, each item's `staged_rows`).
        self.reserved = {Priority.INTERACTIVE: 0, Priority.BULK: 0}
        self._keys = itertools.count()
        # Batch forming looks at the oldest passes only, so its cost does not grow with the queue.
        self._window = window

    def check_fits(self, plans: Sequence[ItemPlan], limit: int | None = None) -> int:
        """Count the passes; InvalidInput (not Overloaded) for an item or call that could never fit
        in `limit` rows (default: the whole queue; bulk items get only their share of it)."""
        limit = self.max_queue if limit is None else limit
        for index, plan in enumerate(plans):
            if plan.num_passes > limit:
                raise InvalidInput(
                    f"its {len(plan.item.labels)} labels need {plan.num_passes} passes; "
                    f"the queue holds at most {limit}",
                    field="labels",
                    index=index,
                )
        rows = sum(plan.num_passes for plan in plans)
        if rows > limit:
            raise InvalidInput(
                f"the {len(plans)} items need {rows} passes; the queue holds at most {limit}",
                field="items",
            )
        return rows

    def depth_of(self, priority: Priority) -> int:
        """Queued passes plus reserved rows of one priority."""
        return len(self._queues[priority]) + self.reserved[priority]

    def oldest(self, priority: Priority) -> list[PendingPass]:
        """The oldest queued passes of `priority` (at most the window), for batch forming."""
        queued = self._queues[priority].values()
        return [entry[0] for entry in itertools.islice(queued, self._window)]

    def enqueue(self, item: SubmittedItem, prepared: PreparedItem) -> None:
        """Queue an item's passes (its rows are already counted in the depth)."""
        item.prepared = prepared
        queue = self._queues[item.priority]
        for index, encoded in enumerate(prepared.passes):
            key = next(self._keys)
            pending = PendingPass(key, encoded.num_tokens, item.priority, item.enqueued_at, item.deadline)
            queue[key] = (pending, item, index)
            item.queued.add(key)

    def enqueue_tokenized(self, items: Sequence[SubmittedItem], prepared: Sequence[PreparedItem]) -> None:
        """Queue staged items' passes in place of their reserved rows (the intake thread).

        Items done meanwhile (cancelled, or shut down while being tokenized) are skipped.
        """
        for item, encoded in zip(items, prepared, strict=True):
            if item.done:
                continue
            rows = item.staged_rows
            self.reserved[item.priority] -= rows
            item.staged_rows = 0
            self.depth += len(encoded.passes) - rows
            self.enqueue(item, encoded)

    def pop(self, pending: PendingPass) -> tuple[SubmittedItem, int] | None:
        """Take one pass out of the queue: its item and pass index; None when it is gone already."""
        entry = self._queues[pending.priority].pop(pending.key, None)
        if entry is None:
            return None
        self.depth -= 1
        entry[1].queued.discard(pending.key)
        return entry[1], entry[2]

    def unqueue(self, item: SubmittedItem) -> None:
        """Drop every queued pass and reserved row of `item`."""
        if item.staged_rows:
            self.depth -= item.staged_rows
            self.reserved[item.priority] -= item.staged_rows
            item.staged_rows = 0
        for key in item.queued:
            if self._queues[item.priority].pop(key, None) is not None:
                self.depth -= 1
        item.queued.clear()

    def take_batch(self, batch: Sequence[PendingPass]) -> list[BatchEntry]:
        """Take a formed batch's passes out of the queue, starting their items' futures.

        Passes gone already, of items done, or of items cancelled just now are left out.
        """
        entries = []
        for pending in batch:
            popped = self.pop(pending)
            if popped is None:
                continue
            item, index = popped
            if item.done:
                continue
            if not item.started:
                if not item.future.set_running_or_notify_cancel():
                    item.done = True  # cancelled between the check and now
                    self.unqueue(item)
                    continue
                item.started = True
            entries.append(BatchEntry(item, index, pending))
        return entries

    def take_expired(self, expired: Sequence[PendingPass]) -> list[SubmittedItem]:
        """Mark done and unqueue the items of these passes (batch forming found them past deadline)."""
        out = []
        for pending in expired:
            popped = self.pop(pending)
            if popped is None or popped[0].done:
                continue
            item = popped[0]
            item.done = True
            self.unqueue(item)
            out.append(item)
        return out

    def take_all(self) -> list[SubmittedItem]:
        """Empty the queue (shutdown): the items not done yet, marked done; nothing stays reserved."""
        items: dict[int, SubmittedItem] = {}
        self.reserved = {Priority.INTERACTIVE: 0, Priority.BULK: 0}
        for queue in self._queues.values():
            for _, item, _ in queue.values():
                if not item.done:
                    item.done = True
                    items[id(item)] = item
            queue.clear()
        self.depth = 0
        return list(items.values())
