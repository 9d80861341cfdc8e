"""The JSON API handlers: decode JSON into the proto messages, call the gRPC servicer, encode back.

The servicer is transport-neutral once its context is: `HttpCallContext` gives it what it reads
from a gRPC context (the time remaining), so limits, priorities, deadlines, the stream's in-order,
bounded answering and every error come from the same code for both transports. JSON shapes are the
proto's JSON mapping (`google.protobuf.json_format`): camelCase on output, both spellings on input.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from gliclass_core.errors import InvalidInput
from server.http.errors import error_body, invalid_json
from server.proto import classifier_pb2 as pb

NDJSON = "application/x-ndjson"
TIMEOUT_HEADER = "X-Timeout-Ms"


class HttpCallContext:
    """What the servicer reads from a gRPC call context, for an HTTP request."""

    def __init__(self, deadline: float | None) -> None:
        self._deadline = deadline

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False


def to_json(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping of a message, fields without presence included."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


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


def parse_message(raw: bytes | str, message: Message) -> Message:
    """Parse one JSON document into `message`; InvalidInput naming the field otherwise."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"not valid JSON: {exc}", field="body") from None
    if not isinstance(value, dict):
        raise InvalidInput("must be a JSON object", field="body")
    try:
        json_format.ParseDict(value, message, max_recursion_depth=16)
    except (json_format.ParseError, ValueError, RecursionError) as exc:
        raise invalid_json(exc) from None
    return message


class Api:
    """The `/v1/...` routes over one `ClassifierServicer`; `on_items(edge, n)` counts taken items."""

    def __init__(self, servicer: Any, max_line_bytes: int, on_items: Callable[[int], None]) -> None:
        self.servicer = servicer
        self.max_line_bytes = max_line_bytes
        self.on_items = on_items

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.post("/v1/classify", self.classify),
            web.post("/v1/classify/stream", self.classify_stream),
            web.get("/v1/model", self.model),
            web.get("/v1/label-sets", self.label_sets),
        ]

    async def classify(self, request: web.Request) -> web.StreamResponse:
        try:
            deadline = deadline_of(request)
            message = parse_message(await request.read(), pb.ClassifyRequest())
            assert isinstance(message, pb.ClassifyRequest)
            self.on_items(len(message.items))
            response = await self.servicer.Classify(message, HttpCallContext(deadline))
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
            deadline = deadline_of(request)
        except InvalidInput as exc:
            return error_response(exc)
        response: web.StreamResponse | None = None
        results = self.servicer.ClassifyStream(self._read_lines(request), HttpCallContext(deadline))
        try:
            async for result in results:
                if response is None:
                    response = web.StreamResponse(headers={"Content-Type": NDJSON})
                    await response.prepare(request)
                # Awaiting the write is the backpressure: a client that stops reading stops us.
                await response.write(json.dumps(to_json(result), separators=(",", ":")).encode() + b"\n")
        except Exception as exc:
            if response is None:
                return error_response(exc)
            _status, body = error_body(exc)
            await response.write(json.dumps(body).encode() + b"\n")
        finally:
            await results.aclose()
        if response is None:  # no items at all: an empty stream
            response = web.StreamResponse(headers={"Content-Type": NDJSON})
            await response.prepare(request)
        await response.write_eof()
        return response

    async def _read_lines(self, request: web.Request) -> AsyncIterator[pb.ClassifyStreamRequest]:
        """Parse the body line by line as it arrives, never holding more than one line."""
        buffer = b""
        number = 0
        async for chunk in request.content.iter_any():
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                number += 1
                message = self._parse_line(line, number)
                if message is not None:
                    yield message
            if len(buffer) > self.max_line_bytes:
                raise InvalidInput(
                    f"line {number + 1} is longer than {self.max_line_bytes} bytes", field="body"
                )
        message = self._parse_line(buffer, number + 1)
        if message is not None:
            yield message

    def _parse_line(self, line: bytes, number: int) -> pb.ClassifyStreamRequest | None:
        if not line.strip():
            return None
        if len(line) > self.max_line_bytes:
            raise InvalidInput(f"line {number} is longer than {self.max_line_bytes} bytes", field="body")
        try:
            message = parse_message(line, pb.ClassifyStreamRequest())
        except InvalidInput as exc:
            raise InvalidInput(f"line {number}: {exc.bare_message}", field=exc.field) from None
        assert isinstance(message, pb.ClassifyStreamRequest)
        self.on_items(len(message.items))
        return message

    async def model(self, request: web.Request) -> web.StreamResponse:
        try:
            return json_response(await self.servicer.GetModelInfo(pb.GetModelInfoRequest(), None))
        except Exception as exc:
            return error_response(exc)

    async def label_sets(self, request: web.Request) -> web.StreamResponse:
        return json_response(await self.servicer.ListLabelSets(pb.ListLabelSetsRequest(), None))
