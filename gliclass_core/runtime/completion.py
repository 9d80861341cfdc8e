"""Resolving items' futures: results in one vectorised post-processing step, failures typed.

Post-processing runs on the replica thread that completed the batch. Whatever `finish_many`
raises (BaseException included: a native panic) is split down to the items that cause it
(`supervision.isolate`), so one bad item fails alone and the thread carries on.

Never called with the scheduler's lock held: a future's callbacks run user code (asyncio
wake-ups, resubmissions) that may re-enter the scheduler.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

from gliclass_core.errors import BatchFailed, GliclassError
from gliclass_core.model import Model
from gliclass_core.runtime.bridge import deferred_wakeups
from gliclass_core.runtime.stats import StatsRecorder
from gliclass_core.runtime.supervision import isolate
from gliclass_core.runtime.work import SubmittedItem
from gliclass_core.types import Prediction, PreparedItem


def finish_items(classifier: Model | None, items: Sequence[SubmittedItem], stats: StatsRecorder) -> None:
    """Post-process finished items in one vectorised step, then resolve their futures."""
    if not items:
        return
    assert classifier is not None  # items are only submitted once the scheduler is open

    def finish(part: Sequence[SubmittedItem]) -> Sequence[Prediction | Exception]:
        logits = [[x for x in item.logits if x is not None] for item in part]
        outcomes = classifier.finish_many(_tokenized(part), logits)
        if len(outcomes) != len(part):
            raise RuntimeError(f"finish_many returned {len(outcomes)} outcomes for {len(part)} items")
        return outcomes

    outcomes: Sequence[Prediction | BaseException]
    try:
        outcomes = finish(items)
    except BaseException as exc:  # a panic must fail its item, not the replica thread
        outcomes = isolate(finish, items, exc.with_traceback(None))
    completed = 0
    with deferred_wakeups():  # one event-loop wake-up for the whole batch
        for item, outcome in zip(items, outcomes):
            if isinstance(outcome, BaseException):
                stats.count("failed_items")
                fail_future(item.future, as_batch_failure(outcome, "post-processing"))
                continue
            try:
                item.future.set_result(outcome)
            except InvalidStateError:
                continue
            completed += 1
    stats.count("completed_items", completed)


def _tokenized(items: Sequence[SubmittedItem]) -> list[PreparedItem]:
    """The items' PreparedItem: an item reaches completion after its passes ran, so it has one."""
    prepared = [item.prepared for item in items if item.prepared is not None]
    if len(prepared) != len(items):
        raise RuntimeError("an item finished before it was tokenized")
    return prepared


def fail_future(future: Future[Any], exc: BaseException) -> bool:
    """Resolve `future` with `exc`; False when it was resolved (or cancelled) already."""
    try:
        future.set_exception(exc)
    except InvalidStateError:
        return False  # cancelled or already resolved: nobody is waiting for this outcome
    return True


def as_batch_failure(exc: BaseException, where: str) -> BaseException:
    """`exc` as the item's error: a GliclassError as it is, anything else as BatchFailed naming `where`."""
    if isinstance(exc, GliclassError):
        return exc
    failure = BatchFailed(f"batch failed on {where}: {type(exc).__name__}: {exc}")
    failure.__cause__ = exc
    return failure
