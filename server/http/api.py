"""The JSON API handlers: decode JSON into resolver requests, call the `ClassifyService`, encode back.

The HTTP edge speaks to the service directly, as gRPC does: the same resolver, limits, deadlines,
cancellation and in-order stream answering (`gliclass_core.service`), with a real call context:
`X-Timeout-Ms` is its deadline, and a client that hangs up cancels it (its queued items are
dropped). JSON shapes are the proto's JSON mapping (`google.protobuf.json_format`): camelCase on
output, both spellings on input. Bodies are bounded and parsed without stalling the loop (`body`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from gliclass_core.errors import InvalidInput, NotReady
from gliclass_core.service import (
    CallContext,
    ClassifyService,
    ItemRequest,
    RequestLimits,
    answer_stream,
    await_outcomes,
    resolve_items,
)
from server.http.body import NdjsonFramer, decode_async
from server.http.errors import error_body
from server.proto import classifier_pb2 as pb
from server.wire import convert

NDJSON = "application/x-ndjson"
TIMEOUT_HEADER = "X-Timeout-Ms"
#: How often a call checks whether its client is still connected.
DISCONNECT_POLL_S = 0.05

A = TypeVar("A")


def to_json(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping of a message, fields without presence included."""
    mapped: dict[str, Any] = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return mapped


def json_body(value: Any, status: int = 200) -> web.Response:
    """A JSON response ending in a newline (so `curl` output stays one document per line)."""
    return web.json_response(value, status=status, dumps=_dumps_line)


def _dumps_line(value: Any) -> str:
    return json.dumps(value) + "\n"


def json_response(message: Message, status: int = 200) -> web.Response:
    return json_body(to_json(message), status)


def error_response(exc: BaseException) -> web.Response:
    status, body = error_body(exc)
    return json_body(body, status)


def deadline_of(request: web.Request) -> float | None:
    """The request's deadline (absolute monotonic seconds) from the `X-Timeout-Ms` header."""
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        ms = float(raw)
    except ValueError:
        ms = float("nan")
    if not ms > 0 or ms == float("inf"):
        raise InvalidInput(f"must be a positive number of milliseconds, got {raw!r}", field=TIMEOUT_HEADER)
    return time.monotonic() + ms / 1000.0


def call_context(request: web.Request) -> CallContext:
    """The request's call context: its deadline; cancelled when the client hangs up (`watching`)."""
    return CallContext(deadline=deadline_of(request))


@contextlib.contextmanager
def watching(request: web.Request, call: CallContext) -> Iterator[None]:
    """While inside, a client that disconnects cancels `call` (aiohttp does not cancel handlers)."""

    async def watch() -> None:
        while not call.cancelled:
            transport = request.transport
            if transport is None or transport.is_closing():
                call.cancel.set("the client disconnected")
                return
            await asyncio.sleep(DISCONNECT_POLL_S)

    watcher = asyncio.ensure_future(watch())
    try:
        yield
    finally:
        watcher.cancel()


def check_length(request: web.Request, max_body_bytes: int) -> None:
    """Refuse a declared body over the limit before reading it (aiohttp checks what it reads)."""
    length = request.content_length
    if length is not None and length > max_body_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_body_bytes, actual_size=length)


async def ndjson_lines(request: web.Request, max_line_bytes: int) -> AsyncIterator[tuple[int, bytes]]:
    """The body's non-blank lines with their numbers, as they arrive (at most one line held, plus a chunk)."""
    framer = NdjsonFramer(max_line_bytes)
    async for chunk in request.content.iter_any():
        for number, line in framer.feed(chunk):
            yield number, line
        await asyncio.sleep(0)  # a chunk of many lines must not hold the loop
    last = framer.close()
    if last is not None:
        yield framer.number, last


async def ndjson_answers(
    request: web.Request,
    call: CallContext,
    answers: AsyncGenerator[A, None],
    encode: Callable[[A], Message],
) -> web.StreamResponse:
    """Stream `answers` as NDJSON, one encoded message per line, while the client stays connected.

    A failure before the first answer is the response's status; after it, the last line is
    `{"error": ...}` (the stream's trailing status, as gRPC ends a stream with one).
    """
    response: web.StreamResponse | None = None
    with watching(request, call):
        try:
            async for answer in answers:
                if response is None:
                    response = web.StreamResponse(headers={"Content-Type": NDJSON})
                    await response.prepare(request)
                line = json.dumps(to_json(encode(answer)), separators=(",", ":"))
                # Awaiting the write is the backpressure: a client that stops reading stops us.
                await response.write(line.encode() + b"\n")
        except Exception as exc:
            if response is None:
                return error_response(exc)
            _status, body = error_body(exc)
            with contextlib.suppress(ConnectionError):
                await response.write(json.dumps(body).encode() + b"\n")
        finally:
            await answers.aclose()
    if response is None:  # no answers at all: an empty stream
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
    await response.write_eof()
    return response


class Api:
    """The `/v1/...` routes over one `ClassifyService`; `on_items(n)` counts the items taken."""

    def __init__(
        self,
        service: ClassifyService,
        limits: RequestLimits,
        max_body_bytes: int,
        stream_max_in_flight: int,
        on_items: Callable[[int], None],
        info_limits: Any = None,
    ) -> None:
        self.service = service
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.stream_max_in_flight = stream_max_in_flight
        self.on_items = on_items
        self.info_limits = info_limits  # what GET /v1/model reports as the limits

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.post("/v1/classify", self.classify),
            web.post("/v1/classify/stream", self.classify_stream),
            web.get("/v1/model", self.model),
            web.get("/v1/label-sets", self.label_sets),
        ]

    async def classify(self, request: web.Request) -> web.StreamResponse:
        received = time.perf_counter()
        try:
            call = call_context(request)
            self._check_length(request)
            decoded = await decode_async(await request.read(), pb.ClassifyRequest(), self.limits)
            self.on_items(len(decoded.requests))
            items = resolve_items(decoded.requests, self.service.label_sets, self.limits)
            with watching(request, call):
                futures = await self.service.submit_async(items, call)
                outcomes = await await_outcomes(futures, call)
            failure = next((o.error for o in outcomes if o.error is not None), None)
            if failure is not None:
                raise failure
            response = convert.classify_response(
                convert.outcome_to_proto(item, o, received) for item, o in zip(decoded.items, outcomes)
            )
        except web.HTTPException:
            raise  # aiohttp's own answers (413 for a body over the limit)
        except Exception as exc:
            return error_response(exc)
        return json_response(response)

    async def classify_stream(self, request: web.Request) -> web.StreamResponse:
        """NDJSON in (one ClassifyStreamRequest per line), NDJSON out (one ClassifyStreamResponse per item).

        A call-wide failure before the first result is the response's status; after it, the last
        line is `{"error": ...}` (the stream's trailing status, as gRPC ends a stream with one).
        """
        try:
            call = call_context(request)
        except InvalidInput as exc:
            return error_response(exc)
        answers = answer_stream(
            self.service, self._messages(request), call, self.limits, self.stream_max_in_flight
        )
        return await ndjson_answers(
            request,
            call,
            answers,
            lambda answer: convert.stream_response(
                convert.outcome_to_proto(answer.tag, answer.outcome, answer.received)
            ),
        )

    async def _messages(self, request: web.Request) -> AsyncIterator[Sequence[tuple[pb.Item, ItemRequest]]]:
        """Decode the body line by line as it arrives, holding at most one line (plus a chunk)."""
        async for number, line in ndjson_lines(request, self.max_body_bytes):
            yield await self._decode_line(line, number)

    async def _decode_line(self, line: bytes, number: int) -> list[tuple[pb.Item, ItemRequest]]:
        decoded = await decode_async(line, pb.ClassifyStreamRequest(), self.limits, f"line {number}: ")
        self.on_items(len(decoded.requests))
        await asyncio.sleep(0)  # one line at a time: other requests run between them
        return list(zip(decoded.items, decoded.requests))

    def _check_length(self, request: web.Request) -> None:
        check_length(request, self.max_body_bytes)

    async def model(self, request: web.Request) -> web.StreamResponse:
        try:
            if not self.service.ready:
                raise NotReady("the model is still loading")
            return json_response(convert.model_info_to_proto(self.service.info, self.info_limits))
        except Exception as exc:
            return error_response(exc)

    async def label_sets(self, request: web.Request) -> web.StreamResponse:
        return json_response(convert.label_sets_to_proto(self.service.label_sets))
