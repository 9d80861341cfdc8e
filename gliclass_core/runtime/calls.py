"""A call's context and how its items are awaited: the deadline and the cancellation signal win.

Every edge builds a `CallContext` per call (gRPC from the call's deadline and cancellation, HTTP
from `X-Timeout-Ms` and the connection, Kafka as bulk work without a deadline) and hands it to the
service (`gliclass_core.service`), so a deadline or a hang-up means the same on every transport.

At the deadline every unresolved item is failed with DeadlineExceeded at once, whether it is
queued or in a batch a replica is computing (the scheduler drops its queued passes and discards
that batch's results for it), so the caller answers at its deadline, not when the batch ends.
When the context is cancelled (the client hung up) the items are cancelled the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from gliclass_core.errors import Cancelled, DeadlineExceeded
from gliclass_core.runtime.batch_forming import Priority
from gliclass_core.runtime.bridge import failure, gather_futures
from gliclass_core.runtime.completion import fail_future
from gliclass_core.types import Prediction


class CancelSignal:
    """Set once when the caller goes away; awaitable from any event loop, settable from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def is_set(self) -> bool:
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        """Why the call was cancelled (None while it is not)."""
        return self._reason

    def set(self, reason: str = "the caller cancelled the call") -> None:
        """Cancel the call (idempotent: the first reason stays)."""
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            loop = waiter.get_loop()
            try:
                loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:
                pass  # that loop is closed: nobody waits there any more

    async def wait(self) -> None:
        """Return once the signal is set."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._reason is not None:
                return
            self._waiters.append(waiter)
        try:
            await waiter
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass(frozen=True)
class CallContext:
    """What the service needs to know about one call besides its items.

    `deadline` is absolute `time.monotonic()` seconds (None: no deadline); `caller` names the
    authenticated client (None when anonymous), for logs and traces, never a secret.
    """

    deadline: float | None = None
    priority: Priority = Priority.INTERACTIVE
    caller: str | None = None
    cancel: CancelSignal = field(default_factory=CancelSignal)

    @classmethod
    def with_timeout(
        cls, timeout_s: float | None, *, priority: Priority = Priority.INTERACTIVE, caller: str | None = None
    ) -> CallContext:
        """A context whose deadline is `timeout_s` from now (None: no deadline)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return cls(deadline=deadline, priority=priority, caller=caller)

    def time_remaining(self) -> float | None:
        """Seconds until the deadline (0 once past it); None without a deadline."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set


@dataclass(frozen=True)
class ItemOutcome:
    """How one item of a call ended: its prediction or its error, and where its time went.

    `queue_s` / `compute_s` are None when the item never reached a replica.
    """

    prediction: Prediction | None
    error: BaseException | None
    queue_s: float | None = None
    compute_s: float | None = None

    @classmethod
    def of(cls, future: Future[Prediction]) -> ItemOutcome:
        """The outcome of a done future (cancellation reads as `Cancelled`)."""
        error = failure(future)
        prediction = future.result() if error is None else None
        return cls(prediction, error, getattr(future, "queue_s", None), getattr(future, "compute_s", None))


async def await_outcomes(futures: Sequence[Future[Prediction]], context: CallContext) -> list[ItemOutcome]:
    """Every item's outcome, in order, once all are done, the deadline passed or the call was cancelled.

    Items still unresolved at the deadline end with DeadlineExceeded; after a cancellation, with
    Cancelled. If the awaiting task itself is cancelled, the unresolved items are cancelled.
    """
    await wait_until_done(futures, context)
    return [ItemOutcome.of(future) for future in futures]


async def wait_until_done(futures: Sequence[Future[Any]], context: CallContext) -> None:
    """Wait for `futures`; at the deadline or on cancellation fail the unresolved ones (see module)."""
    if not futures:
        return
    gathering = asyncio.ensure_future(gather_futures(futures, return_exceptions=True))
    cancelled = asyncio.ensure_future(context.cancel.wait())
    try:
        done, _ = await asyncio.wait(
            {gathering, cancelled}, timeout=context.time_remaining(), return_when=asyncio.FIRST_COMPLETED
        )
    except BaseException:
        gathering.cancel()  # gather_futures cancels what is unresolved
        raise
    finally:
        cancelled.cancel()
    if gathering in done:
        return
    if context.cancel.is_set:
        error: BaseException = Cancelled(context.cancel.reason or "the caller cancelled the call")
        for future in futures:
            future.cancel()
    else:
        error = DeadlineExceeded("the deadline passed before the item was computed")
    for future in futures:
        fail_future(future, error)  # a no-op for those resolved (or cancelled) already
    with contextlib.suppress(asyncio.CancelledError):
        await gathering  # every future is resolved now: returns at once
