"""The `ErrorInterceptor`: core errors escaping Classifier methods end the call with their gRPC status.

Servicer methods raise `GliclassError`s (from the core or from `server.wire.convert`); the interceptor
turns them into the call's status through `server.wire.status.status_for`, the one mapping table
(the HTTP edge and ClassifyStream's per-item failures use it too).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from gliclass_core.errors import InvalidInput
from server.grpc.details import bad_request_trailer
from server.grpc.interceptors import CLASSIFIER_METHODS, Around, CallInterceptor, Wrap
from server.wire.status import status_for


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
