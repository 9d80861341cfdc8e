"""The `gliclass.v1.Classifier` servicer: decode, call the `ClassifyService`, encode.

Thin by design: conversion lives in `server.wire.convert`, status codes in `server.wire.status`,
request resolution, deadlines, cancellation and the stream's in-order, bounded answering in the
core's service (`gliclass_core.service`); batching and the forward pass in the runtime.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence

import grpc

from gliclass_core.config import LabelSet
from gliclass_core.errors import NotReady
from gliclass_core.service import (
    CallContext,
    ClassifyService,
    ItemRequest,
    StreamCounters,
    answer_stream,
    await_outcomes,
)
from gliclass_core.service.sessions import SessionRequest, answer_sessions
from server.grpc.config import GrpcConfig
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc as pb_grpc
from server.wire import convert
from server.wire.sessions import session_request_from_proto, session_response

#: What the streams have taken in and sent out (tests and benchmarks read `servicer.stats`).
StreamStats = StreamCounters


class ClassifierServicer(pb_grpc.ClassifierServicer):
    """Serve Classify, ClassifyStream, ClassifySession, GetModelInfo and ListLabelSets from one service."""

    def __init__(self, service: ClassifyService, config: GrpcConfig) -> None:
        self._service = service
        self._config = config
        self._limits = convert.limits_of(config)
        self.stats = StreamCounters()

    @property
    def label_sets(self) -> Mapping[str, LabelSet]:
        """The label sets items may name: the service's (a reload replaces them for every edge)."""
        return self._service.label_sets

    def set_label_sets(self, label_sets: Mapping[str, LabelSet]) -> None:
        """Serve `label_sets` from the next request on (SIGHUP reload); calls in progress keep theirs."""
        self._service.set_label_sets(label_sets)

    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        received = time.perf_counter()
        items = convert.items_from_proto(request.items, self.label_sets, self._config)
        call = call_context(context)
        # submit_async plans a large call off the loop; a call cancelled by its client cancels
        # this task, and with it what is still queued (await_outcomes).
        futures = await self._service.submit_async(items, call)
        outcomes = await await_outcomes(futures, call)
        failure = next((o.error for o in outcomes if o.error is not None), None)
        if failure is not None:
            raise failure
        return convert.classify_response(
            convert.outcome_to_proto(item, o, received) for item, o in zip(request.items, outcomes)
        )

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[pb.ClassifyStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClassifyStreamResponse]:
        answers = answer_stream(
            self._service,
            _decoded(request_iterator),
            call_context(context),
            self._limits,
            self._config.stream_max_in_flight,
            counters=self.stats,
        )
        try:
            async for answer in answers:
                result = convert.outcome_to_proto(answer.tag, answer.outcome, answer.received)
                yield convert.stream_response(result)
        finally:
            await answers.aclose()

    async def ClassifySession(
        self, request_iterator: AsyncIterator[pb.SessionRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SessionResponse]:
        answers = answer_sessions(
            self._service,
            _session_messages(request_iterator),
            call_context(context),
            self._limits,
            self._config.stream_max_in_flight,
            counters=self.stats,
        )
        try:
            async for answer in answers:
                label_set = answer.tag.label_set
                yield session_response(answer.session_id, answer.outcome, answer.received, label_set)
        finally:
            await answers.aclose()

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        if not self._service.ready:
            raise NotReady("the model is still loading")
        return convert.model_info_to_proto(self._service.info, self._config)

    async def ListLabelSets(
        self, request: pb.ListLabelSetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLabelSetsResponse:
        return convert.label_sets_to_proto(self.label_sets)


def call_context(context: grpc.aio.ServicerContext) -> CallContext:
    """The call's context: its deadline, and a cancellation signal set when the RPC ends early."""
    call = CallContext.with_timeout(context.time_remaining())
    try:
        context.add_done_callback(lambda ctx: call.cancel.set() if ctx.cancelled() else None)
    except (AttributeError, NotImplementedError):
        pass  # grpc.aio sets it up on the call; a context without it still cancels the task
    return call


async def _decoded(
    requests: AsyncIterator[pb.ClassifyStreamRequest],
) -> AsyncIterator[Sequence[tuple[pb.Item, ItemRequest]]]:
    async for request in requests:
        yield [(item, convert.request_from_proto(item)) for item in request.items]


async def _session_messages(
    requests: AsyncIterator[pb.SessionRequest],
) -> AsyncIterator[tuple[pb.SessionRequest, SessionRequest]]:
    async for request in requests:
        yield request, session_request_from_proto(request)
