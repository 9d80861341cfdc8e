"""The `gliclass.v1.Classifier` servicer: decode, submit to the shared scheduler, encode.

Thin by design: conversion lives in `server.grpc.convert`, status codes in `server.grpc.errors`,
batching and the forward pass in the runtime's scheduler and device threads (never on this event loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from gliclass_core.config import LabelSet
from gliclass_core.errors import InvalidInput, NotReady
from gliclass_core.runtime import Priority, bridge
from gliclass_core.types import Prediction
from server.grpc import convert
from server.grpc.config import GrpcConfig
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc as pb_grpc


@dataclass
class StreamStats:
    """Counters the tests and benchmarks read: what the streams have taken in and sent out."""

    items_received: int = 0
    items_answered: int = 0
    streams_open: int = 0


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
class _Pending:
    """One stream item awaiting its turn to be answered: a future result, or a ready error result."""

    item_id: str
    label_set: str
    received: float
    #: Done once the submitted future is (woken in bursts, see `bridge.when_done`); None when `ready`.
    future: asyncio.Future[None] | None = None
    ready: pb.ItemResult | None = None
    submitted: list[concurrent.futures.Future[Prediction]] = field(default_factory=list)
    return_uncalibrated: bool = False


class ClassifierServicer(pb_grpc.ClassifierServicer):
    """Serve Classify, ClassifyStream, GetModelInfo and ListLabelSets from one runtime."""

    def __init__(self, runtime: Any, config: GrpcConfig) -> None:
        self._runtime = runtime
        self._config = config
        self._label_sets: Mapping[str, LabelSet] | None = None
        self.stats = StreamStats()

    @property
    def label_sets(self) -> Mapping[str, LabelSet]:
        """The label sets items may name: the runtime's, until a reload replaces them."""
        return self._runtime.label_sets if self._label_sets is None else self._label_sets

    def set_label_sets(self, label_sets: Mapping[str, LabelSet]) -> None:
        """Serve `label_sets` from the next request on (SIGHUP reload); calls in progress keep theirs."""
        self._label_sets = dict(label_sets)

    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        received = time.perf_counter()
        items = convert.items_from_proto(request.items, self.label_sets, self._config)
        # Submit keeping the futures for their queue/compute timings; a cancelled call cancels what
        # is still queued (gather_futures). submit_async plans a large call off the loop.
        futures = await self._runtime.scheduler.submit_async(items, Priority.INTERACTIVE, _deadline(context))
        # return_exceptions: every outcome is retrieved; one loop wake-up per batch, not per item.
        outcomes = await bridge.gather_futures(futures, return_exceptions=True)
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None:
            raise failure
        predictions: list[Prediction] = outcomes
        return convert.classify_response(
            convert.result_to_proto(
                item.id, pred, _timings(fut, received), item.label_set, item.return_uncalibrated
            )
            for item, pred, fut in zip(request.items, predictions, futures)
        )

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[pb.ClassifyStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClassifyStreamResponse]:
        gate = InFlightGate(self._config.stream_max_in_flight)
        # Entries in arrival order; its size is bounded by the gate. None marks the end of input.
        pending: asyncio.Queue[_Pending | BaseException | None] = asyncio.Queue()
        reader = asyncio.create_task(self._read_stream(request_iterator, gate, pending, _deadline(context)))
        self.stats.streams_open += 1
        current: _Pending | None = None
        try:
            while True:
                entry = await pending.get()
                if entry is None:
                    break
                if isinstance(entry, BaseException):
                    raise entry
                current = entry
                result = await self._answer(entry)
                current = None
                yield convert.stream_response(result)
                self.stats.items_answered += 1
                await gate.release()
            await reader
        finally:
            self.stats.streams_open -= 1
            reader.cancel()
            leftovers = [current] if current else []
            while not pending.empty():
                leftover = pending.get_nowait()
                if isinstance(leftover, _Pending):
                    leftovers.append(leftover)
            for leftover in leftovers:
                for f in leftover.submitted:
                    f.cancel()

    async def _read_stream(
        self,
        request_iterator: AsyncIterator[pb.ClassifyStreamRequest],
        gate: InFlightGate,
        pending: asyncio.Queue[_Pending | BaseException | None],
        deadline: float | None,
    ) -> None:
        """Read messages while the gate allows, submit their items, queue them for answering in order."""
        index = 0
        try:
            async for request in request_iterator:
                n = len(request.items)
                if n == 0:
                    continue
                await gate.acquire(n)
                self.stats.items_received += n
                if n > self._config.max_items_per_request:
                    exc = InvalidInput(
                        f"{n} items in one message, the limit is {self._config.max_items_per_request}",
                        field="items",
                        index=index,
                    )
                    for item in request.items:
                        pending.put_nowait(self._failed(item, exc))
                    index += n
                    continue
                for item in request.items:
                    pending.put_nowait(await self._submit_one(item, index, deadline))
                    index += 1
            pending.put_nowait(None)
        except Exception as exc:
            pending.put_nowait(exc)

    async def _submit_one(self, item: pb.Item, index: int, deadline: float | None) -> _Pending:
        received = time.perf_counter()
        try:
            core_item = convert.item_from_proto(item, self.label_sets, self._config, index)
            (future,) = await self._runtime.scheduler.submit_async(
                [core_item], Priority.INTERACTIVE, deadline
            )
        except InvalidInput as exc:
            # The scheduler numbers items within one submit; report the item's place in the stream.
            return self._failed(item, InvalidInput(exc.bare_message, field=exc.field, index=index))
        except Exception as exc:
            return self._failed(item, exc)
        return _Pending(
            item_id=item.id,
            label_set=item.label_set,
            received=received,
            future=bridge.when_done(future),
            submitted=[future],
            return_uncalibrated=item.return_uncalibrated,
        )

    def _failed(self, item: pb.Item, exc: BaseException) -> _Pending:
        return _Pending(
            item.id,
            item.label_set,
            time.perf_counter(),
            ready=convert.error_to_proto(item.id, exc, item.label_set),
        )

    async def _answer(self, entry: _Pending) -> pb.ItemResult:
        if entry.ready is not None:
            return entry.ready
        assert entry.future is not None
        await entry.future
        submitted = entry.submitted[0]
        error = bridge.failure(submitted)
        if error is not None:
            return convert.error_to_proto(entry.item_id, error, entry.label_set)
        return convert.result_to_proto(
            entry.item_id,
            submitted.result(),
            _timings(submitted, entry.received),
            entry.label_set,
            entry.return_uncalibrated,
        )

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        if not self._runtime.ready:
            raise NotReady("the model is still loading")
        return convert.model_info_to_proto(self._runtime.info, self._config)

    async def ListLabelSets(
        self, request: pb.ListLabelSetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLabelSetsResponse:
        return convert.label_sets_to_proto(self.label_sets)


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as absolute `time.monotonic()` seconds, what the scheduler takes."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _timings(future: concurrent.futures.Future[Prediction], received: float) -> convert.ItemTimings:
    """Total time measured here; the queue/compute split if the runtime sets `queue_s`/`compute_s`."""
    total_ms = (time.perf_counter() - received) * 1000.0
    queue_s = getattr(future, "queue_s", None)
    compute_s = getattr(future, "compute_s", None)
    return convert.ItemTimings(
        queue_ms=float("nan") if queue_s is None else queue_s * 1000.0,
        compute_ms=float("nan") if compute_s is None else compute_s * 1000.0,
        total_ms=total_ms,
    )
