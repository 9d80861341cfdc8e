"""Running one session batch on its replica's thread, and answering its callers.

`run_session_batch` applies a `SessionBatch` to its replica's `SessionStore`: the appends of
its distinct sessions as ONE `append_items` call (one batched decoder call for the chunks, one for
the label blocks; each session keeps its own labels and options), then the closes. An append
whose input is invalid fails alone (the others run again without it); any other fault fails the
batch's appends only, and their sessions are discarded (they may be half-appended), so their next
chunk starts afresh and says so (`new_session`). `resolve` then answers the callers, outside the
scheduler's lock.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import InvalidStateError
from typing import Any

from gliclass_core.errors import Cancelled, DeadlineExceeded, InvalidInput, NotReady
from gliclass_core.runtime.completion import as_batch_failure, fail_future
from gliclass_core.runtime.sessions.queue import QueuedSessionWork, SessionBatch
from gliclass_core.runtime.sessions.store import SessionStore
from gliclass_core.runtime.sessions.strategies import Strategy
from gliclass_core.types import ClassifyItem

log = logging.getLogger(__name__)

#: One entry's outcome: its SessionUpdate (append), bool (close), or its error.
Outcome = Any


def run_session_batch(batch: SessionBatch, device: str) -> list[Outcome]:
    """Apply the batch to its store; one outcome per entry, in order (see module). Never raises
    for an entry's fault: a failure is that entry's outcome."""
    store = batch.store
    # Expired sessions go before anything is resolved against them: a session past its TTL starts
    # afresh with the default strategy, and an append without labels is refused as for a new one.
    store.expire()
    outcomes: list[Outcome] = [None] * len(batch.entries)
    work: list[tuple[int, str, ClassifyItem, Strategy | None]] = []
    for index, entry in enumerate(batch.entries):
        if entry.append is None:
            continue
        try:
            item, strategy = _resolve(store, entry.append.session_id, entry.append, batch.default_strategy)
        except InvalidInput as exc:
            outcomes[index] = exc
            continue
        work.append((index, entry.session_id, item, strategy))
    if work:
        for (index, *_), outcome in zip(work, _append(store, work, device)):
            outcomes[index] = outcome
    for index, entry in enumerate(batch.entries):
        appended = not isinstance(outcomes[index], BaseException)
        if entry.append is not None and not (entry.append.close and appended):
            continue
        try:
            closed = store.close(entry.session_id)
        except BaseException as exc:  # a fault must fail its entry, not the thread
            outcomes[index] = as_batch_failure(exc.with_traceback(None), device)
            continue
        if entry.append is None:
            outcomes[index] = closed
    return outcomes


def resolve(batch: SessionBatch, outcomes: Sequence[Outcome]) -> None:
    """Answer every entry of the batch (call outside the scheduler's lock)."""
    for entry, outcome in zip(batch.entries, outcomes):
        if isinstance(outcome, BaseException):
            fail_future(entry.future, outcome)
        else:
            _set(entry, outcome)


def fail_unstarted(entries: Sequence[QueuedSessionWork]) -> None:
    """Fail entries dropped before they started (deadline, cancellation)."""
    for entry in entries:
        if entry.cancel is not None and entry.cancel.is_set:
            fail_future(entry.future, Cancelled(entry.cancel.reason or "the caller cancelled the call"))
        else:
            fail_future(entry.future, DeadlineExceeded("the deadline passed before the chunk was appended"))


def fail_all(entries: Sequence[QueuedSessionWork], exc: BaseException) -> int:
    """Fail entries with `exc` (shutdown, a faulted replica); how many were still waiting."""
    return sum(fail_future(entry.future, exc) for entry in entries)


def shutdown_error() -> NotReady:
    return NotReady("the scheduler shut down before this session append was computed")


# -- internals ----------------------------------------------------------------------------------------
def _resolve(
    store: SessionStore, session_id: str, append: Any, default_strategy: Strategy
) -> tuple[ClassifyItem, Strategy | None]:
    """The item the append is scored with (empty labels: the session's last) and its strategy."""
    item: ClassifyItem = append.item
    if not item.labels:
        last = store.last_item(session_id)
        if last is None:
            raise InvalidInput("no labels given, and the session has none yet", field="labels")
        item = dataclasses.replace(last, text=item.text)
    strategy = append.strategy
    if strategy is None and session_id not in store:
        strategy = default_strategy
    return item, strategy


def _append(store: SessionStore, work: list[tuple[int, str, ClassifyItem, Strategy | None]],
            device: str) -> list[Outcome]:  # fmt: skip
    ids = [sid for _, sid, _, _ in work]
    try:
        return list(store.append_items(ids, [i for *_, i, _ in work], [s for *_, s in work]))
    except InvalidInput as exc:
        if len(work) == 1:
            return [exc]
        # The store checks every input before it changes anything, so running each alone is safe:
        # only the append whose input is invalid (found once tokenized, e.g. too many tokens) fails.
    except BaseException as exc:  # a native panic too: it fails this batch's appends, not the thread
        error = as_batch_failure(exc.with_traceback(None), device)
        log.warning("session batch of %d appends failed on %s: %s", len(work), device, error)
        _discard(store, ids)
        return [error] * len(work)
    return [_one(store, part, device) for part in work]


def _one(store: SessionStore, part: tuple[int, str, ClassifyItem, Strategy | None], device: str) -> Outcome:
    _, sid, item, strategy = part
    try:
        return store.append_items([sid], [item], [strategy])[0]
    except InvalidInput as exc:
        return exc
    except BaseException as exc:
        _discard(store, [sid])
        return as_batch_failure(exc.with_traceback(None), device)


def _discard(store: SessionStore, session_ids: list[str]) -> None:
    try:
        store.discard(session_ids)
    except BaseException:
        log.exception("discarding the sessions of a failed batch failed")


def _set(entry: QueuedSessionWork, value: Any) -> None:
    try:
        entry.future.set_result(value)
    except InvalidStateError:
        pass  # failed at its deadline, or cancelled, while it ran: the caller answered already
