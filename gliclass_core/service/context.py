"""A call's context: its deadline, a cancellation signal, its priority and who is calling.

Every edge builds one per call (gRPC from the call's deadline and cancellation, HTTP from
`X-Timeout-Ms` and the connection, Kafka as bulk work without a deadline) and hands it to the
service, so a deadline or a hang-up means the same on every transport.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from gliclass_core.runtime.batch_forming import Priority


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
