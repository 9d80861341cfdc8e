"""Core errors → HTTP statuses, through the gRPC table in `server.errors` (one mapping, two transports)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format

from gliclass_core.errors import InvalidInput
from server.errors import status_for

#: gRPC status → HTTP status, as the gRPC-HTTP mapping (google.rpc.Code) has it.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
}


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status and `{"error": ItemError}` body (the proto's JSON mapping) for an exception."""
    code, message = status_for(exc)
    error: dict[str, Any] = {"code": code.value[0], "status": code.name, "message": message}
    field = getattr(exc, "field", None)
    if field:
        error["field"] = field
    return HTTP_STATUS.get(code, 500), {"error": error}


def invalid_json(exc: json_format.ParseError | ValueError, where: str = "body") -> InvalidInput:
    """A body that is not the message's JSON mapping: name the field protobuf's parser stopped at."""
    message = str(exc)
    field = where
    # json_format names the path it failed at: '... at "ClassifyRequest.items[0]"' / 'field named "x"'.
    for marker in ('field named "', 'at "'):
        start = message.find(marker)
        if start >= 0:
            field = message[start + len(marker) :].split('"', 1)[0]
            break
    return InvalidInput(message, field=field)
