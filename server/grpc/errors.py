"""Core errors → gRPC status codes, in one place: `status_for` and the `ErrorInterceptor`.

Servicer methods raise `GliclassError`s (from the core or from `server.grpc.convert`); the interceptor
turns them into the call's status. ClassifyStream reports per-item failures in its responses, and
uses `status_for` for those too, so the mapping table below is the only one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
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
from server.grpc.details import bad_request_trailer
from server.grpc.interceptors import CLASSIFIER_METHODS, Around, CallInterceptor, Wrap

log = logging.getLogger(__name__)

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


class ErrorInterceptor(CallInterceptor):
    """Map exceptions escaping Classifier methods to statuses via `status_for`."""

    def around_call(self, method: str, metadata: Any) -> Around | None:
        return _mapped_errors if method.startswith(CLASSIFIER_METHODS) else None

    def wrap_deserializer(self, method: str) -> Wrap | None:
        return _lenient


@contextlib.asynccontextmanager
async def _mapped_errors(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    """End the call with the status `status_for` maps its error to (an abort passes through)."""
    try:
        yield _checked(request)
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        code, message = status_for(exc)
        if isinstance(exc, InvalidInput):
            # The same status again as google.rpc.Status, with a BadRequest naming item and field.
            await context.abort(code, message, trailing_metadata=bad_request_trailer(exc, message))
        await context.abort(code, message)


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
