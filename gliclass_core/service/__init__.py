"""The front door every edge uses: the service contract, call contexts and the request resolver."""

from __future__ import annotations

from gliclass_core.runtime.calls import (
    CallContext,
    CancelSignal,
    ItemOutcome,
    await_outcomes,
    wait_until_done,
)
from gliclass_core.service.contract import ClassifyService
from gliclass_core.service.request import (
    ItemRequest,
    RequestLimits,
    check_count,
    check_threshold,
    resolve_item,
    resolve_items,
)
from gliclass_core.service.stream import StreamAnswer, StreamCounters, answer_stream

__all__ = [
    "CallContext",
    "CancelSignal",
    "ClassifyService",
    "ItemOutcome",
    "ItemRequest",
    "RequestLimits",
    "StreamAnswer",
    "StreamCounters",
    "answer_stream",
    "await_outcomes",
    "check_count",
    "check_threshold",
    "resolve_item",
    "resolve_items",
    "wait_until_done",
]
