"""`ScheduledSessions`: the `SessionService` of a runtime, its work batched by the scheduler.

Each replica keeps the sessions pinned to it in its own `SessionStore` (its model, its device);
appends wait in the scheduler's bounded queue (`sessions.queue`) and run on the replica threads,
up to `max_batch_size` distinct sessions per batched decoder call (`sessions.batch`). What the
edges see is the `SessionService` protocol (`sessions.service`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from gliclass_core.errors import InvalidInput, NotReady, UnsupportedModel
from gliclass_core.model import Model
from gliclass_core.processing.validation import validate_item
from gliclass_core.runtime.batch_forming import Priority
from gliclass_core.runtime.bridge import failure
from gliclass_core.runtime.calls import CallContext, wait_until_done
from gliclass_core.runtime.sessions.batch import fail_unstarted
from gliclass_core.runtime.sessions.limits import SessionStats, check_chunk, check_session_id
from gliclass_core.runtime.sessions.queue import QueuedSessionWork, SessionQueue
from gliclass_core.runtime.sessions.service import SessionAppend, SessionOutcome, SessionSettings
from gliclass_core.runtime.sessions.store import SessionStore, SessionUpdate
from gliclass_core.runtime.sessions.strategies import Strategy
from gliclass_core.types import ClassifyItem


class SessionScheduler(Protocol):
    """What the service needs of the runtime's `Scheduler` (named here: the scheduler imports this
    package, so this package does not import it)."""

    @property
    def sessions(self) -> SessionQueue: ...

    def attach_sessions(self, stores: Sequence[SessionStore], default_strategy: Strategy) -> None: ...

    def submit_session_work(
        self, entries: Sequence[QueuedSessionWork], priority: Priority, *, bounded: bool = True
    ) -> None: ...


class ScheduledSessions:
    """Sessions of the pool's replicas, appended in scheduler batches on the replica threads."""

    def __init__(self, scheduler: SessionScheduler, settings: SessionSettings | None = None) -> None:
        self._scheduler = scheduler
        self._settings = settings or SessionSettings()
        self._stores: list[SessionStore] = []
        self._model_kind: str | None = None
        self._refusal = ""
        self._closed = False

    @property
    def settings(self) -> SessionSettings:
        return self._settings

    @property
    def supported(self) -> bool:
        return bool(self._stores)

    def attach(self, models: Sequence[Model]) -> None:
        """Keep sessions on these replicas' models, one store each, in the pool's order (a model that
        cannot keep them leaves the service unsupported)."""
        try:
            stores = [SessionStore(model, self._settings.limits) for model in models]
        except UnsupportedModel as exc:
            self._model_kind = models[0].info.architecture if models else "none"
            self._refusal = str(exc)
            return
        self._scheduler.attach_sessions(stores, self._settings.default_strategy)
        self._stores = stores

    def submit(self, appends: Sequence[SessionAppend], context: CallContext) -> list[Future[SessionUpdate]]:
        self._check(appends)
        futures: list[Future[SessionUpdate]] = [Future() for _ in appends]
        now = time.monotonic()
        entries = [
            QueuedSessionWork(
                append.session_id, append, future, Priority(context.priority), now, context.deadline,
                context.cancel,
            )
            for append, future in zip(appends, futures)
        ]  # fmt: skip
        if context.cancelled or (context.deadline is not None and context.deadline <= now):
            fail_unstarted(entries)  # nothing is queued: the session stays as it is
            return futures
        # A call of bare closes (no text) is never refused for room: closes free memory, and whoever
        # lets go of many sessions at once (a revoked Kafka partition) must not leave them open.
        bare_closes = all(append.close and not append.item.text for append in appends)
        self._scheduler.submit_session_work(entries, Priority(context.priority), bounded=not bare_closes)
        for entry in entries:  # failed at the deadline or cancelled while queued: free its room now
            entry.future.add_done_callback(functools.partial(self._on_done, entry))
        return futures

    async def append(self, appends: Sequence[SessionAppend], context: CallContext) -> list[SessionOutcome]:
        futures = self.submit(appends, context)
        await wait_until_done(futures, context)
        outcomes = []
        for append, future in zip(appends, futures):
            error = failure(future)
            update = future.result() if error is None else None
            outcomes.append(SessionOutcome(update, error, closed=append.close and error is None))
        return outcomes

    def close(self, session_id: str) -> bool:
        future = self._queue_close(session_id, CallContext())
        return bool(future.result()) if future is not None else False

    async def close_async(self, session_id: str, context: CallContext) -> bool:
        future = self._queue_close(session_id, context)
        if future is None:
            return False
        await wait_until_done([future], context)
        error = failure(future)
        if error is not None:
            raise error
        return bool(future.result())

    def _queue_close(self, session_id: str, context: CallContext) -> Future[Any] | None:
        """Queue a close behind the session's appends; None when no session can have that id."""
        if not self._stores:
            return None
        try:
            check_session_id(self._settings.limits, session_id)
        except InvalidInput:
            return None  # an id no session can have is not open
        future: Future[Any] = Future()
        entry = QueuedSessionWork(
            session_id, None, future, Priority.INTERACTIVE, time.monotonic(), context.deadline, context.cancel
        )
        # A close is not bounded by the queue: it frees memory, and each one holds its caller
        # until it ran (or its deadline), so there are never more closes queued than callers waiting.
        self._scheduler.submit_session_work([entry], Priority.INTERACTIVE, bounded=False)
        future.add_done_callback(functools.partial(self._on_done, entry))
        return future

    def stats(self) -> SessionStats:
        total = SessionStats()
        for store in self._stores:
            total = total.add(store.stats)
        return total

    def _on_done(self, entry: QueuedSessionWork, _future: Future[Any]) -> None:
        if entry.queued:  # unlocked read: `forget` checks again under the lock
            self._scheduler.sessions.forget(entry)

    def shutdown(self) -> None:
        """Refuse new appends (those queued run while the scheduler drains, or fail with NotReady)."""
        self._closed = True

    # -- internals ------------------------------------------------------------------------------------
    def _check(self, appends: Sequence[SessionAppend]) -> None:
        if self._closed:
            raise NotReady("the service is shutting down")
        if not self._stores:
            if self._model_kind is None:
                raise NotReady("the model is not loaded yet")
            raise UnsupportedModel(
                self._refusal
                or f"streaming sessions need a decoder-kv checkpoint; this model is {self._model_kind!r}"
            )
        if len(appends) > self._settings.max_per_call:
            raise InvalidInput(
                f"{len(appends)} session appends in one call; at most {self._settings.max_per_call}",
                field="session_id",
            )
        limits = self._settings.limits
        for append in appends:
            if not isinstance(append, SessionAppend) or not isinstance(append.item, ClassifyItem):
                raise InvalidInput("expected a SessionAppend of a ClassifyItem", field="session_id")
            check_session_id(limits, append.session_id)
            check_chunk(limits, append.item.text)
            if append.strategy is not None and not isinstance(append.strategy, Strategy):
                raise InvalidInput("must be a Strategy", field="strategy")
            if append.item.labels:  # empty labels reuse the session's: checked when it runs
                validate_item(dataclasses.replace(append.item, text="-"))
