"""Session messages ↔ protobuf, for both edges: `SessionRequest` in, `SessionResponse` out.

gRPC reads the messages off the stream; HTTP parses its JSON into the same messages
(`json_format`), so both decode through `session_request_from_proto` into the core's neutral
`SessionRequest` and encode through `session_response`.
"""

from __future__ import annotations

import time
from typing import Any

from gliclass_core.runtime.sessions.service import SessionOutcome
from gliclass_core.service.sessions import SessionRequest
from server.proto import classifier_pb2 as pb
from server.wire.convert import ItemTimings, error_to_proto, result_to_proto


def session_request_from_proto(message: pb.SessionRequest) -> SessionRequest:
    """Decode a `SessionRequest` message: optional fields that are unset become None."""

    def given(name: str) -> Any:
        return getattr(message, name) if message.HasField(name) else None

    return SessionRequest(
        session_id=message.session_id,
        text=message.text,
        labels=tuple(message.labels),
        label_set=message.label_set or None,
        strategy=given("strategy"),
        threshold=given("threshold"),
        multi_label=given("multi_label"),
        top_k=given("top_k"),
        prompt=given("prompt"),
        close=message.close,
    )


def session_response(
    session_id: str, outcome: SessionOutcome, received: float, label_set: str = ""
) -> pb.SessionResponse:
    """The `SessionResponse` of one answered message: its update, or its error (`received`: perf_counter)."""
    if outcome.error is not None:
        return session_error(session_id, outcome.error)
    update = outcome.update
    if update is None:  # a message that only closed its session
        return pb.SessionResponse(session_id=session_id, closed=outcome.closed)
    response = pb.SessionResponse(
        session_id=session_id,
        triggered=update.triggered,
        cached_tokens=update.cached_tokens,
        tokens_added=update.tokens_added,
        new_session=update.new_session,
        closed=outcome.closed,
    )
    if update.prediction is not None:
        total_ms = (time.perf_counter() - received) * 1000.0
        timings = ItemTimings(queue_ms=float("nan"), compute_ms=float("nan"), total_ms=total_ms)
        response.result.CopyFrom(result_to_proto(session_id, update.prediction, timings, label_set))
    return response


def session_error(session_id: str, exc: BaseException) -> pb.SessionResponse:
    """The `SessionResponse` of a message that failed on its own (the status table's code, the field)."""
    return pb.SessionResponse(session_id=session_id, error=error_to_proto(session_id, exc).error)
