"""Awaiting a call's items under its context: the deadline and the cancellation signal win.

At the deadline every unresolved item is failed with DeadlineExceeded at once, whether it is
queued or in a batch a replica is computing (the scheduler drops its queued passes and discards
that batch's results for it), so the caller answers at its deadline, not when the batch ends.
When the context is cancelled (the client hung up) the items are cancelled the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from gliclass_core.errors import Cancelled, DeadlineExceeded
from gliclass_core.runtime.bridge import gather_futures
from gliclass_core.runtime.completion import fail_future
from gliclass_core.service.context import CallContext
from gliclass_core.service.contract import ItemOutcome
from gliclass_core.types import Prediction


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
