"""Core errors → gRPC status codes, in one place: `status_for` and the `ErrorInterceptor`.

Servicer methods raise `GliclassError`s (from the core or from `server.convert`); the interceptor
turns them into the call's status. ClassifyStream reports per-item failures in its responses, and
uses `status_for` for those too, so the mapping table below is the only one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from gliclass_core.errors import (
    BatchFailed,
    Cancelled,
    DeadlineExceeded,
    GliclassError,
    InvalidInput,
    NotReady,
    Overloaded,
)
from server.handlers import rewrap

log = logging.getLogger(__name__)

SERVICE_PREFIX = "/gliclass.v1.Classifier/"

_CODES: tuple[tuple[type[GliclassError], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Cancelled, grpc.StatusCode.CANCELLED),
    (BatchFailed, grpc.StatusCode.INTERNAL),
)


#: Status details are sent as a (percent-encoded) trailer, which gRPC refuses over 16 KiB: the
#: client would get RESOURCE_EXHAUSTED "Stream removed" instead of the real status.
MAX_DETAILS_CHARS = 1000


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Return the status code and client-facing message (at most MAX_DETAILS_CHARS) for an exception."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code, _details(str(exc))
    if isinstance(exc, GliclassError):
        return grpc.StatusCode.INTERNAL, _details(str(exc))
    # Unexpected: log the traceback here, never send internals to the client.
    log.error("unexpected error in a gRPC call", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error"


def _details(message: str) -> str:
    if len(message) <= MAX_DETAILS_CHARS:
        return message
    return f"{message[:MAX_DETAILS_CHARS]}... ({len(message) - MAX_DETAILS_CHARS} more characters cut)"


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Map exceptions escaping Classifier methods to statuses via `status_for`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(SERVICE_PREFIX):
            return handler
        return rewrap(handler, _wrap_unary, _wrap_stream, _lenient)


class _Unparsable:
    """Stands in for a request message protobuf refused (e.g. a string field that is not UTF-8)."""

    def __init__(self, error: Exception) -> None:
        self.error = InvalidInput(f"the request message cannot be parsed ({error}); strings must be UTF-8")


def _lenient(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """A deserializer that hands a refused message on as `_Unparsable`, so the call ends INVALID_ARGUMENT
    (grpc's own handling would answer UNKNOWN or INTERNAL)."""

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:
            return _Unparsable(exc)

    return parse


def _checked(request: Any) -> Any:
    """Raise for an unparsable request; wrap a request stream so an unparsable message raises when read."""
    if isinstance(request, _Unparsable):
        raise request.error
    if hasattr(request, "__aiter__"):
        return _checked_stream(request)
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Unparsable):
            raise request.error
        yield request


def _wrap_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(_checked(request), context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, message = status_for(exc)
            await context.abort(code, message)

    return unary


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behavior(_checked(request_iterator), context):
                yield response
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, message = status_for(exc)
            await context.abort(code, message)

    return stream
