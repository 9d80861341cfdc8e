"""A stream of calls answered in order with bounded in-flight items, for every streaming edge.

gRPC `ClassifyStream` and HTTP's NDJSON endpoint both read messages of items and answer item by
item, in arrival order; at most `max_in_flight` items are unanswered before the reader stops
reading (backpressure). Each item is submitted on its own, so one bad item fails alone. The edge
passes its decoded messages (each a list of `(tag, ItemRequest)`: the tag is whatever it needs to
encode the answer) and encodes each `StreamAnswer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gliclass_core.config import LabelSet
from gliclass_core.errors import InvalidInput
from gliclass_core.runtime.calls import CallContext, ItemOutcome, await_outcomes
from gliclass_core.service.contract import ClassifyService
from gliclass_core.service.request import ItemRequest, RequestLimits, resolve_item
from gliclass_core.types import Prediction

Tag = TypeVar("Tag")


@dataclass(frozen=True)
class StreamAnswer(Generic[Tag]):
    """One item's answer: the edge's tag, the outcome and when the item was received (perf_counter)."""

    tag: Tag
    outcome: ItemOutcome
    received: float


class InFlightGate:
    """Bound the unanswered items of one stream; a message of n items waits for n free slots."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._changed = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        """Wait until n more items fit (a message larger than the limit waits for an empty stream)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._used == 0 or self._used + n <= self._limit)
            self._used += n

    async def release(self, n: int = 1) -> None:
        async with self._changed:
            self._used -= n
            self._changed.notify_all()


@dataclass
class _Pending(Generic[Tag]):
    tag: Tag
    received: float
    ready: ItemOutcome | None = None
    submitted: list[Future[Prediction]] = field(default_factory=list)


@dataclass
class StreamCounters:
    """What the streams have taken in and answered (tests and benchmarks read them)."""

    items_received: int = 0
    items_answered: int = 0
    streams_open: int = 0


class _ReadFailed:
    """What the reader queues when reading the messages failed: the stream ends with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error


_END = object()  # what the reader queues after the last message

Entry = TypeVar("Entry")
Outcome = TypeVar("Outcome")
Put = Callable[[Entry], None]


async def answer_in_order(
    read: Callable[[Put[Entry]], Awaitable[None]],
    settle: Callable[[Entry], Awaitable[Outcome]],
    drop: Callable[[Entry], None],
    gate: InFlightGate,
    counters: StreamCounters,
) -> AsyncGenerator[tuple[Entry, Outcome], None]:
    """The one answering loop of every stream: entries answered in the order `read` puts them.

    `read(put)` runs as its own task, taking a gate slot per entry before it puts it (backpressure);
    each entry is answered once `settle(entry)` returns, and its slot released. An error in `read`
    ends the stream with it (after the entries before it). Whenever the stream ends (the client
    went away included), the reader is cancelled and `drop` is called on every entry not answered.
    """
    pending: asyncio.Queue[Any] = asyncio.Queue()

    async def reader() -> None:
        try:
            await read(pending.put_nowait)
            pending.put_nowait(_END)
        except Exception as exc:
            pending.put_nowait(_ReadFailed(exc))

    task = asyncio.create_task(reader())
    counters.streams_open += 1
    current: list[Entry] = []
    try:
        while True:
            entry = await pending.get()
            if entry is _END:
                break
            if isinstance(entry, _ReadFailed):
                raise entry.error
            current = [entry]
            outcome = await settle(entry)
            current = []
            yield entry, outcome
            counters.items_answered += 1
            await gate.release()
        await task
    finally:
        counters.streams_open -= 1
        task.cancel()
        leftovers = list(current)
        while not pending.empty():
            leftover = pending.get_nowait()
            if leftover is not _END and not isinstance(leftover, _ReadFailed):
                leftovers.append(leftover)
        for leftover in leftovers:
            drop(leftover)


async def answer_stream(
    service: ClassifyService,
    messages: AsyncIterator[Sequence[tuple[Tag, ItemRequest]]],
    context: CallContext,
    limits: RequestLimits,
    max_in_flight: int,
    label_sets: Mapping[str, LabelSet] | None = None,
    counters: StreamCounters | None = None,
) -> AsyncGenerator[StreamAnswer[Tag], None]:
    """Answer every item of every message in order; an error reading `messages` ends the stream with it."""
    counters = counters if counters is not None else StreamCounters()
    sets = service.label_sets if label_sets is None else label_sets
    gate = InFlightGate(max_in_flight)
    stats = counters

    async def read(put: Put[_Pending[Tag]]) -> None:
        await _read(service, messages, context, limits, sets, gate, put, stats)

    async def settle(entry: _Pending[Tag]) -> ItemOutcome:
        if entry.ready is not None:
            return entry.ready
        (outcome,) = await await_outcomes(entry.submitted, context)
        return outcome

    def drop(entry: _Pending[Tag]) -> None:
        for future in entry.submitted:
            future.cancel()

    async with contextlib.aclosing(answer_in_order(read, settle, drop, gate, counters)) as answers:
        async for entry, outcome in answers:
            yield StreamAnswer(entry.tag, outcome, entry.received)


async def _read(
    service: ClassifyService,
    messages: AsyncIterator[Sequence[tuple[Tag, ItemRequest]]],
    context: CallContext,
    limits: RequestLimits,
    label_sets: Mapping[str, LabelSet],
    gate: InFlightGate,
    put: Put[_Pending[Tag]],
    counters: StreamCounters,
) -> None:
    """Read messages while the gate allows, submit their items, put them for answering in order."""
    index = 0
    async for message in messages:
        n = len(message)
        if n == 0:
            continue
        await gate.acquire(n)
        counters.items_received += n
        if n > limits.max_items_per_request:
            exc = InvalidInput(
                f"{n} items in one message, the limit is {limits.max_items_per_request}",
                field="items",
                index=index,
            )
            for tag, _ in message:
                put(_failed(tag, exc))
            index += n
            continue
        for tag, request in message:
            put(await _submit_one(service, tag, request, index, context, limits, label_sets))
            index += 1


async def _submit_one(
    service: ClassifyService,
    tag: Tag,
    request: ItemRequest,
    index: int,
    context: CallContext,
    limits: RequestLimits,
    label_sets: Mapping[str, LabelSet],
) -> _Pending[Tag]:
    received = time.perf_counter()
    try:
        item = resolve_item(request, label_sets, limits, index)
        (future,) = await service.submit_async([item], context)
    except InvalidInput as exc:
        # The scheduler numbers items within one submit; report the item's place in the stream.
        return _failed(tag, InvalidInput(exc.bare_message, field=exc.field, index=index))
    except Exception as exc:
        return _failed(tag, exc)
    return _Pending(tag, received, submitted=[future])


def _failed(tag: Tag, exc: BaseException) -> _Pending[Tag]:
    return _Pending(tag, time.perf_counter(), ready=ItemOutcome(None, exc))
