"""`DirectSessions`: a `SessionService` over one `SessionStore`, its appends run on one thread.

Appends run in submission order on a single thread, so appends to the same session keep their
order whichever call they came from. The queue of waiting appends is bounded (Overloaded past it).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from gliclass_core.errors import DeadlineExceeded, InvalidInput, NotReady, Overloaded, UnsupportedModel
from gliclass_core.model import Model
from gliclass_core.runtime.bridge import failure
from gliclass_core.runtime.calls import CallContext, wait_until_done
from gliclass_core.runtime.sessions.service import SessionAppend, SessionOutcome, SessionSettings
from gliclass_core.runtime.sessions.store import SessionStats, SessionStore, SessionUpdate

#: Appends waiting for the session thread at most.
MAX_PENDING = 4096


class DirectSessions:
    """Sessions of the model `attach`ed, appended on one thread (see module)."""

    def __init__(self, settings: SessionSettings | None = None) -> None:
        self._settings = settings or SessionSettings()
        self._store: SessionStore | None = None
        self._model_kind: str | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gliclass-sessions")
        self._pending = 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def settings(self) -> SessionSettings:
        return self._settings

    @property
    def supported(self) -> bool:
        return self._store is not None

    def attach(self, model: Model) -> None:
        """Keep sessions of `model` (a model that cannot keep them leaves the service unsupported)."""
        try:
            self._store = SessionStore(model, self._settings.limits)
        except UnsupportedModel:
            self._model_kind = model.info.architecture

    def submit(self, appends: Sequence[SessionAppend], context: CallContext) -> list[Future[SessionUpdate]]:
        store = self._check(appends)
        with self._lock:
            if self._pending + len(appends) > MAX_PENDING:
                raise Overloaded(f"{self._pending} session appends waiting; retry later")
            self._pending += len(appends)
        return [self._executor.submit(self._run, store, append, context) for append in appends]

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
        store = self._store
        if store is None:
            return False
        return self._executor.submit(store.close, session_id).result()

    def stats(self) -> SessionStats:
        store = self._store
        return dataclasses.replace(store.stats) if store is not None else SessionStats()

    def shutdown(self) -> None:
        """Refuse new appends; those queued still run."""
        self._closed = True
        self._executor.shutdown(wait=False)

    # -- internals ------------------------------------------------------------------------------------
    def _check(self, appends: Sequence[SessionAppend]) -> SessionStore:
        if self._closed:
            raise NotReady("the service is shutting down")
        store = self._store
        if store is None:
            if self._model_kind is None:
                raise NotReady("the model is not loaded yet")
            raise UnsupportedModel(
                f"streaming sessions need a decoder-kv checkpoint; this model is {self._model_kind!r}"
            )
        if len(appends) > self._settings.max_per_call:
            raise InvalidInput(
                f"{len(appends)} session appends in one call; at most {self._settings.max_per_call}",
                field="session_id",
            )
        return store

    def _run(self, store: SessionStore, append: SessionAppend, context: CallContext) -> SessionUpdate:
        with self._lock:
            self._pending -= 1
        item = append.item
        if not item.labels:
            last = store.last_item(append.session_id)
            if last is None:
                raise InvalidInput("no labels given, and the session has none yet", field="labels")
            item = dataclasses.replace(last, text=item.text)
        if context.deadline is not None and context.time_remaining() == 0:
            raise DeadlineExceeded("the deadline passed before the chunk was appended")
        strategy = append.strategy
        if strategy is None and append.session_id not in store:
            strategy = self._settings.default_strategy
        update = store.append(
            append.session_id,
            item.text,
            item.labels,
            strategy=strategy,
            threshold=item.threshold,
            multi_label=item.multi_label,
            top_k=item.top_k,
            prompt=item.prompt,
            examples=item.examples,
        )
        if append.close:
            store.close(append.session_id)
        return update
