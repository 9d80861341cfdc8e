"""Core errors → gRPC status codes, in one place: `status_for`, the table both edges answer with.

The gRPC edge ends calls with it (`server.grpc.errors.ErrorInterceptor`), ClassifyStream reports
per-item failures with it, and the HTTP edge maps its codes on to HTTP statuses
(`server.http.errors`), so a failure reads the same on every edge.
"""

from __future__ import annotations

import logging

import grpc

from gliclass_core.errors import (
    BatchFailed,
    Cancelled,
    DeadlineExceeded,
    GliclassError,
    InvalidInput,
    NotReady,
    Overloaded,
    UnsupportedModel,
)

log = logging.getLogger("server.grpc.errors")  # the logger name operators already filter on

_CODES: tuple[tuple[type[GliclassError], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Cancelled, grpc.StatusCode.CANCELLED),
    (BatchFailed, grpc.StatusCode.INTERNAL),
    # A request the loaded model cannot serve at all (sessions on a model that keeps none).
    (UnsupportedModel, grpc.StatusCode.FAILED_PRECONDITION),
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
