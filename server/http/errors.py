"""Core errors → HTTP statuses, through the gRPC table in `server.wire.status` (one mapping, two edges)."""

from __future__ import annotations

import re
from typing import Any

import grpc
from google.protobuf import json_format

from gliclass_core.errors import InvalidInput
from server.wire.status import status_for

#: gRPC status → HTTP status, as the gRPC-HTTP mapping (google.rpc.Code) has it.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
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
    """A body that is not the message's JSON mapping: name the field protobuf's parser stopped at.

    json_format nests its messages ('Failed to parse items field: Failed to parse topK field: ...'
    or '... has no field named "txt" ...'); the innermost name is the field, in its proto spelling.
    """
    message = str(exc)
    unknown = _UNKNOWN_FIELD.search(message)
    nested = _PARSING_FIELD.findall(message)
    path = _AT_PATH.search(message)
    leaf = path.group(1).rsplit(".", 1)[-1].split("[", 1)[0] if path else ""
    name = unknown.group(1) if unknown else (leaf or (nested[-1] if nested else where))
    return InvalidInput(message.split("\n", 1)[0], field=_CAMEL.sub(r"_\1", name).lower())


_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]{1,100})"')
_PARSING_FIELD = re.compile(r"Failed to parse (\w{1,100}) field")
_AT_PATH = re.compile(r" at ([A-Za-z_][\w.\[\]]{0,200}\.[\w\[\]]{1,100})\.?$")
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
