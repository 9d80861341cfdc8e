"""Waking asyncio callers from replica threads: one loop wake-up per burst, not one per item.

`asyncio.wrap_future` costs one `call_soon_threadsafe` (a self-pipe write) per completed future;
with thousands of single-item callers that write dominated the replica thread. Here completions
are posted to a per-loop mailbox and the loop is woken only when the mailbox was empty, so a
batch of N results costs about one wake-up.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from gliclass_core.errors import Cancelled

_bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBridge] = weakref.WeakKeyDictionary()
_bridges_lock = threading.Lock()
_deferring = threading.local()  # .bridges: set of bridges to wake when the current batch ends


class _LoopBridge:
    """A mailbox of asyncio futures to resolve, drained by one callback on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: list[asyncio.Future[None]] = []
        self._scheduled = False

    def post(self, waiter: asyncio.Future[None]) -> None:
        """Mark `waiter` done from any thread (woken at the end of a `deferred_wakeups` block)."""
        pending: set[_LoopBridge] | None = getattr(_deferring, "bridges", None)
        with self._lock:
            self._ready.append(waiter)
            if self._scheduled:
                return
            if pending is not None:
                pending.add(self)
                return
            self._scheduled = True
        self._wake()

    def wake_if_needed(self) -> None:
        """Schedule the drain if waiters are posted and none is scheduled."""
        with self._lock:
            if self._scheduled or not self._ready:
                return
            self._scheduled = True
        self._wake()

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass  # the loop is closed: nobody is awaiting any more

    def _drain(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
            self._scheduled = False
        for waiter in ready:
            if not waiter.done():
                waiter.set_result(None)


@contextmanager
def deferred_wakeups() -> Iterator[None]:
    """Within the block, completions on this thread wake each event loop once, at the end.

    The scheduler resolves a whole batch inside one block, so a batch costs one wake-up per
    loop that awaits any of its items, not one per item (nor one per GIL switch).
    """
    if getattr(_deferring, "bridges", None) is not None:
        yield  # nested: the outer block wakes
        return
    pending: set[_LoopBridge] = set()
    _deferring.bridges = pending
    try:
        yield
    finally:
        _deferring.bridges = None
        for bridge in pending:
            bridge.wake_if_needed()


def _bridge(loop: asyncio.AbstractEventLoop) -> _LoopBridge:
    with _bridges_lock:
        bridge = _bridges.get(loop)
        if bridge is None:
            bridge = _bridges[loop] = _LoopBridge(loop)
        return bridge


def when_done(future: Future[Any]) -> asyncio.Future[None]:
    """An asyncio future that completes (with None) once `future` is done, however it ended.

    Unlike `asyncio.wrap_future` the loop is woken once per burst of completions, not once per
    future; read the outcome from `future` itself (see `failure`). Call on the loop's thread.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    bridge = _bridge(loop)
    future.add_done_callback(lambda _: bridge.post(waiter))
    return waiter


async def gather_futures(futures: Sequence[Future[Any]], *, return_exceptions: bool = False) -> list[Any]:
    """Await concurrent futures from asyncio; results in order.

    Without `return_exceptions` the first failure is raised as soon as it happens. If this
    coroutine is cancelled (or raises), the futures not yet done are cancelled.
    """
    if not futures:
        return []
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    bridge = _bridge(loop)
    lock = threading.Lock()
    remaining = [len(futures)]

    def on_done(future: Future[Any]) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        failed = not return_exceptions and (future.cancelled() or future.exception() is not None)
        if last or failed:
            bridge.post(waiter)

    try:
        for future in futures:
            future.add_done_callback(on_done)
        await waiter
        results: list[Any] = []
        for future in futures:
            if not future.done():  # woken early by a failure: raise the first one
                raise next(e for e in map(failure, futures) if e is not None)
            error = failure(future)
            if error is None:
                results.append(future.result())
            elif return_exceptions:
                results.append(error)
            else:
                raise error
        return results
    except BaseException:
        for future in futures:  # nobody will read the others: free their queue slots
            future.cancel()
        raise


def failure(future: Future[Any]) -> BaseException | None:
    """The error a done future ended with (cancellation as `Cancelled`); None if pending or fine."""
    if not future.done():
        return None
    if future.cancelled():
        return Cancelled("the item was cancelled")
    return future.exception()
