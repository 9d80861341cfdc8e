"""`google.rpc.Status` details for a gRPC error: a `BadRequest` naming the item and field at fault.

Clients that read rich errors (grpcio-status `rpc_status.from_call`, Go's `status.FromError(...).Details()`,
`buf curl`, grpcurl) get the field path without parsing the message, in the trailer
`grpc-status-details-bin`, which carries the same code and message as the call's status.
"""

from __future__ import annotations

from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from gliclass_core.errors import InvalidInput

#: The request message's repeated field the item index refers to (ClassifyRequest/ClassifyStreamRequest).
ITEMS_FIELD = "items"
MAX_FIELD_CHARS = 200
MAX_DESCRIPTION_CHARS = 1000


def field_path(exc: InvalidInput) -> str:
    """The offending field as a google.rpc path: "items[2].label_thresholds", "items", or ""."""
    parts = [f"{ITEMS_FIELD}[{exc.index}]"] if exc.index is not None else []
    if exc.field:
        parts.append(exc.field)
    return ".".join(parts)


def bad_request_trailer(exc: InvalidInput, message: str) -> tuple[tuple[str, bytes], ...]:
    """The trailing metadata carrying INVALID_ARGUMENT with one `BadRequest.FieldViolation`.

    `message` is the call's (already bounded) status message; the description is as bounded, so the
    trailer stays far below gRPC's 16 KiB metadata limit.
    """
    violation = error_details_pb2.BadRequest.FieldViolation(
        field=field_path(exc)[:MAX_FIELD_CHARS], description=exc.bare_message[:MAX_DESCRIPTION_CHARS]
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message)
    status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return tuple(rpc_status.to_status(status).trailing_metadata)
