"""Connection limits for the HTTP edge: header-read timeout, connection cap, JSON protocol errors.

aiohttp bounds the request line and header sizes (`max_line_size`, `max_field_size`,
`max_headers`) and closes idle keep-alive connections (`keepalive_timeout`), but nothing of its own
closes a connection whose request headers never finish arriving, and it accepts any number of
connections. `GuardedSite` is a `TCPSite` whose connections are `GuardedRequestHandler`s: each must
deliver a complete request head within `header_timeout_s` of opening, or of the first byte after
an idle keep-alive, and past `max_connections` open connections a new one is answered 503 and
closed. Protocol errors (a malformed request line, headers too long) are answered in the API's
`{"error": ...}` shape, and logged without the bytes that caused them (they may hold a key).

The handler reads three attributes of aiohttp's `RequestHandler` (`_waiter`, `_request_count`,
`_force_close`); the tests in tests/integration/test_http_guard.py fail if a release renames them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

#: HTTP status → the gRPC status name and code an `{"error": ...}` body carries (google.rpc.Code).
GRPC_STATUS = {
    400: ("INVALID_ARGUMENT", 3),
    401: ("UNAUTHENTICATED", 16),
    403: ("PERMISSION_DENIED", 7),
    404: ("NOT_FOUND", 5),
    405: ("UNIMPLEMENTED", 12),
    408: ("DEADLINE_EXCEEDED", 4),
    413: ("RESOURCE_EXHAUSTED", 8),
    415: ("INVALID_ARGUMENT", 3),
    421: ("INVALID_ARGUMENT", 3),
    429: ("RESOURCE_EXHAUSTED", 8),
    431: ("RESOURCE_EXHAUSTED", 8),
    499: ("CANCELLED", 1),
    501: ("UNIMPLEMENTED", 12),
    503: ("UNAVAILABLE", 14),
    504: ("DEADLINE_EXCEEDED", 4),
}
MAX_MESSAGE_CHARS = 200


def error_json(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    """The `{"error": ItemError}` body for an HTTP status (the same shape as core errors get)."""
    name, code = GRPC_STATUS.get(status, ("INTERNAL", 13) if status >= 500 else ("INVALID_ARGUMENT", 3))
    error: dict[str, Any] = {"code": code, "status": name, "message": message[:MAX_MESSAGE_CHARS]}
    if field:
        error["field"] = field
    return {"error": error}


def error_response(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        error_json(status, message, field), status=status, headers=headers, dumps=_dumps_line
    )


def _dumps_line(value: Any) -> str:
    return json.dumps(value) + "\n"


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol plus a deadline on each request head and JSON protocol errors."""

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._heads_seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()  # a connection that never sends a request is a stalled head too

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._request_count != self._heads_seen:  # a request head completed
            self._heads_seen = self._request_count
            self._disarm_header_timer()
        elif data and self._header_timer is None and self._waiting_for_head():
            self._arm_header_timer()  # the first bytes of the next request on a kept-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._header_timeout, self._header_deadline)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self._request_count == self._heads_seen and not self._force_close:
            self.force_close()  # no complete head in time: nothing was asked, so nothing is answered

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A protocol error or an unhandled exception, as an `{"error": ...}` body (closes the connection)."""
        if status >= 500 and exc is not None:
            self.log_exception("error handling a request", exc_info=exc)
        else:
            # The parser's message may quote the offending line (an Authorization header included).
            log.debug("refused a malformed request: %s %s", status, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; cannot send an error response")
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        text = phrase if status >= 500 else f"{phrase}: {message or type(exc).__name__}"
        response = error_response(status, text, field="request" if status < 500 else None)
        response.force_close()
        return response


class _Refused(asyncio.Protocol):
    """Answer one connection over the cap with 503 and close it, without reading what it sends."""

    RESPONSE = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Retry-After: 1\r\nContent-Length: %d\r\n\r\n%s"
    )
    LINGER_S = 2.0

    def __init__(self, limit: int) -> None:
        body = json.dumps(error_json(503, f"too many open connections (the limit is {limit})")) + "\n"
        self.payload = self.RESPONSE % (len(body), body.encode())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.payload)
        # Closing with the client's request unread would send a reset that can destroy the answer
        # before it is read: end our side, drop what arrives, close at the client's EOF or soon after.
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(self.LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # discarded: this connection is not served

    def eof_received(self) -> bool:
        return False  # close


class GuardedSite(web.TCPSite):
    """A TCPSite whose connections are `GuardedRequestHandler`s, at most `max_connections` at once."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        handler_options: dict[str, Any],
        header_timeout: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_address=True)
        self._handler_options = handler_options
        self._header_timeout = header_timeout
        self._max_connections = max_connections
        self.refused = 0

    @property
    def open_connections(self) -> int:
        server = self._runner.server
        return len(server.connections) if server is not None else 0

    def _protocol(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        if self.open_connections >= self._max_connections:
            self.refused += 1
            return _Refused(self._max_connections)
        return GuardedRequestHandler(
            server,
            loop=asyncio.get_running_loop(),
            header_timeout=self._header_timeout,
            **self._handler_options,
        )

    async def start(self) -> None:
        """Bind as `TCPSite.start` does, with `_protocol` as the connection factory."""
        self._runner._reg_site(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            # A TLS handshake is part of the request head: it gets the same deadline.
            ssl_handshake_timeout=self._header_timeout if self._ssl_context is not None else None,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
