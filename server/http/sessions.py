"""The `/v1/sessions` routes: gRPC `ClassifySession` over HTTP/JSON.

- `POST /v1/sessions/{session_id}`: one message (a `SessionRequest` as JSON, its `sessionId` taken
  from the path) → one `SessionResponse`, or the error's status with `{"error": ...}`.
- `DELETE /v1/sessions/{session_id}`: close the session → `SessionResponse` with `closed`.
- `POST /v1/sessions`: NDJSON in (one `SessionRequest` per line), NDJSON out (one `SessionResponse`
  per message, in order; a message that fails alone has `error` set), framed, bounded and streamed
  by the same helpers as `/v1/classify/stream`.

Each JSON message is parsed into the proto message (`json_format`, as every HTTP body is) and
decoded by `server.wire.sessions`, so HTTP and gRPC resolve messages through one path
(`gliclass_core.service.sessions`). The guard middleware (Host, key, Content-Type, size) runs
before every route of the application, these included.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from google.protobuf import json_format

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.bounded_json import shape
from gliclass_core.service import ClassifyService, RequestLimits
from gliclass_core.service.sessions import (
    SessionAnswer,
    SessionRequest,
    answer_sessions,
    append_session,
    close_session,
)
from server.http.api import (
    call_context,
    check_length,
    error_response,
    json_response,
    ndjson_answers,
    ndjson_lines,
    watching,
)
from server.http.body import INLINE_BYTES, MAX_DEPTH, SCAN_BYTES, VALUES_PER_ITEM
from server.http.errors import invalid_json
from server.proto import classifier_pb2 as pb
from server.wire.sessions import session_request_from_proto, session_response

SESSION_PATH = "/v1/sessions/{session_id}"
STREAM_PATH = "/v1/sessions"


def decode_session(raw: bytes, limits: RequestLimits, where: str = "") -> pb.SessionRequest:
    """Pre-scan and parse one JSON session message; InvalidInput names the field."""
    if len(raw) > SCAN_BYTES:  # a small document cannot hold enough to matter
        found = shape(raw)
        if found.depth > MAX_DEPTH:
            raise InvalidInput(
                f"{where}JSON nested {found.depth} levels deep, at most {MAX_DEPTH}", field="body"
            )
        if found.values > limits.max_labels_per_item + VALUES_PER_ITEM:
            raise InvalidInput(
                f"{where}{found.values} JSON values, more than a valid message holds", field="body"
            )
    try:
        value = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{where}not valid JSON: {exc}", field="body") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}must be a JSON object", field="body")
    message = pb.SessionRequest()
    try:
        json_format.ParseDict(value, message, max_recursion_depth=MAX_DEPTH)
    except (json_format.ParseError, ValueError, RecursionError) as exc:
        error = invalid_json(exc)
        raise InvalidInput(f"{where}{error.bare_message}", field=error.field) from None
    return message


async def decode_session_async(raw: bytes, limits: RequestLimits, where: str = "") -> pb.SessionRequest:
    """`decode_session`, in a worker thread for a body over INLINE_BYTES."""
    if len(raw) <= INLINE_BYTES:
        return decode_session(raw, limits, where)
    return await asyncio.to_thread(decode_session, raw, limits, where)


class SessionApi:
    """The `/v1/sessions` routes over one `ClassifyService`; `on_items(n)` counts the messages taken."""

    def __init__(
        self,
        service: ClassifyService,
        limits: RequestLimits,
        max_body_bytes: int,
        stream_max_in_flight: int,
        on_items: Callable[[int], None],
    ) -> None:
        self.service = service
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.stream_max_in_flight = stream_max_in_flight
        self.on_items = on_items

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.post(STREAM_PATH, self.stream),
            web.post(SESSION_PATH, self.append),
            web.delete(SESSION_PATH, self.close),
        ]

    async def append(self, request: web.Request) -> web.StreamResponse:
        received = time.perf_counter()
        session_id = request.match_info["session_id"]
        try:
            call = call_context(request)
            check_length(request, self.max_body_bytes)
            message = await decode_session_async(await request.read(), self.limits)
            if message.session_id and message.session_id != session_id:
                raise InvalidInput("differs from the path's session id; leave it out", field="session_id")
            message.session_id = session_id
            self.on_items(1)
            with watching(request, call):
                outcome = await append_session(
                    self.service, session_request_from_proto(message), self.limits, call
                )
            if outcome.error is not None:
                raise outcome.error
        except web.HTTPException:
            raise  # aiohttp's own answers (413 for a body over the limit)
        except Exception as exc:
            return error_response(exc)
        return json_response(session_response(session_id, outcome, received, message.label_set))

    async def close(self, request: web.Request) -> web.StreamResponse:
        session_id = request.match_info["session_id"]
        try:
            call = call_context(request)
            with watching(request, call):
                closed = await close_session(self.service, session_id, call)
        except Exception as exc:
            return error_response(exc)
        return json_response(pb.SessionResponse(session_id=session_id, closed=closed))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """NDJSON in (one SessionRequest per line), NDJSON out (one SessionResponse per message)."""
        try:
            call = call_context(request)
        except InvalidInput as exc:
            return error_response(exc)
        answers = answer_sessions(
            self.service, self._messages(request), call, self.limits, self.stream_max_in_flight
        )
        return await ndjson_answers(request, call, answers, _encode)

    async def _messages(
        self, request: web.Request
    ) -> AsyncIterator[tuple[str, SessionRequest | InvalidInput]]:
        """Decode the body line by line as it arrives; a line that is not a message fails alone."""
        async for number, line in ndjson_lines(request, self.max_body_bytes):
            self.on_items(1)
            try:
                message = await decode_session_async(line, self.limits, f"line {number}: ")
            except InvalidInput as exc:
                yield "", exc  # answered with its error, in its place; the stream goes on
                continue
            yield message.label_set, session_request_from_proto(message)
            await asyncio.sleep(0)  # one line at a time: other requests run between them


def _encode(answer: SessionAnswer[str]) -> pb.SessionResponse:
    return session_response(answer.session_id, answer.outcome, answer.received, answer.tag)
