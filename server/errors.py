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


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Return the status code and client-facing message for an exception."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code, str(exc)
    if isinstance(exc, GliclassError):
        return grpc.StatusCode.INTERNAL, str(exc)
    # Unexpected: log the traceback here, never send internals to the client.
    log.error("unexpected error in a gRPC call", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error"


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
        return rewrap(handler, _wrap_unary, _wrap_stream)


def _wrap_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, message = status_for(exc)
            await context.abort(code, message)

    return unary


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request_iterator, context):
                yield response
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, message = status_for(exc)
            await context.abort(code, message)

    return stream
