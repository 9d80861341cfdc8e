"""The OpenAPI 3 document of the HTTP edge, with its schemas generated from the proto descriptors.

The component schemas are the proto3 JSON mapping of `gliclass.v1` messages, derived from the
same descriptors `json_format` encodes with, so the document cannot describe other shapes than
the server sends. One spelling per field, the proto JSON name (camelCase): the server also accepts
the proto's snake_case names, as json_format does, but a document listing both makes generated
clients collide. Every response, error statuses included, has a typed schema, so generators
(openapi-python-client, openapi-generator) produce a client that classifies as it stands.
`docs/openapi.json` is this document committed; a test fails when they differ.
Regenerate with `python -m server.http.openapi > docs/openapi.json`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from server.proto import classifier_pb2 as pb

#: Messages clients send: null reads as "not set" for their scalar fields.
REQUEST_MESSAGES = ("Item", "ClassifyRequest", "ClassifyStreamRequest", "SessionRequest")
#: Fields the server refuses a request without (server.wire.convert), by message.
REQUIRED = {"Item": ["text"], "ClassifyRequest": ["items"]}
UINT32_MAX = 2**32 - 1

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": UINT32_MAX},
}


def _field_schema(field: FieldDescriptor) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _value_schema(value)}
    schema = _value_schema(field)
    if field.is_repeated:
        return {"type": "array", "items": schema}
    return schema


def _value_schema(field: FieldDescriptor) -> dict[str, Any]:
    if field.message_type is not None:
        return {"$ref": f"#/components/schemas/{field.message_type.name}"}
    return dict(_SCALARS[field.type])


def message_schema(descriptor: Descriptor, *, request: bool) -> dict[str, Any]:
    """The JSON schema of one message: every field under its JSON name, the required ones listed."""
    properties: dict[str, Any] = {}
    for field in descriptor.fields:
        schema = _field_schema(field)
        if request and schema.get("type") not in (None, "object", "array"):
            # The proto3 JSON mapping reads null as "not set" (json_format does). Scalars only: a
            # nullable map or list is an invalid union for some generators, and nothing needs it.
            schema = {**schema, "nullable": True}
        properties[field.json_name] = schema
    out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if descriptor.name in REQUIRED:
        out["required"] = REQUIRED[descriptor.name]
    if descriptor.name == "ClassifyRequest":
        properties["items"] = {**properties["items"], "minItems": 1}
    return out


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


ERRORS = {
    "400": "A malformed request; `error.field` names the field (`error.message` the item index)",
    "401": "An API key is required ([auth]): send `Authorization: Bearer <key>`",
    "413": "The body is larger than [http] max_body_bytes (default: [grpc] max_message_bytes)",
    "415": "The body's Content-Type is not application/json or application/x-ndjson",
    "400s": (
        "A malformed message (`error.field` names the field: sessionId, text, labels, strategy...), "
        "or FAILED_PRECONDITION (`error.status`): the model keeps no sessions (no KV cache)"
    ),
    "421": "The Host header names a host this server does not serve ([http] allowed_hosts)",
    "500": "The batch holding the items failed (the error names the cause); retrying may succeed",
    "429": "The scheduler queue is full; back off and retry",
    "503": "The model is still loading, or the server is shutting down",
    "504": "The X-Timeout-Ms deadline passed before the items were computed",
}


def _errors(*codes: str) -> dict[str, Any]:
    out = {}
    for code in codes:
        # "400s": the 400 of the session routes, described for them.
        out[code[:3]] = {"description": ERRORS[code], "content": _json("ErrorResponse")}
    return out


TIMEOUT = {
    "name": "X-Timeout-Ms",
    "in": "header",
    "required": False,
    "description": "Deadline in ms from receipt (the gRPC deadline); queued items past it are dropped",
    "schema": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
}


def build_openapi(with_classify: bool = True) -> dict[str, Any]:
    """The whole document (without the classify operations for a worker-only edge)."""
    messages = pb.DESCRIPTOR.message_types_by_name
    schemas: dict[str, Any] = {
        name: message_schema(messages[name], request=name in REQUEST_MESSAGES) for name in sorted(messages)
    }
    schemas["ErrorResponse"] = {
        "type": "object",
        "properties": {"error": _ref("ItemError")},
        "required": ["error"],
    }
    schemas.update(stats_schemas())
    schemas["Probe"] = {
        "type": "object",
        "properties": {"status": {"type": "string"}, "reason": {"type": "string"}},
        "required": ["status"],
    }
    probe = {"content": {"application/json": {"schema": _ref("Probe")}}}
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process answers",
                "responses": {"200": {"description": "Alive", **probe}},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the model pool is warm and the server is not draining",
                "responses": {
                    "200": {"description": "SERVING", **probe},
                    "503": {"description": "NOT_SERVING (loading, draining or failed)", **probe},
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text exposition of every metric (the OpenTelemetry Prometheus reader)",
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "404": {"description": "Metrics are off", "content": _json("ErrorResponse")},
                },
            }
        },
        "/v1/stats": {
            "get": {
                "operationId": "stats",
                "summary": "Live view figures: rates and percentiles over the last seconds (the console)",
                "responses": {
                    "200": {
                        "description": "Figures",
                        "content": _json("Stats"),
                    }
                },
            }
        },
    }
    if with_classify:
        paths["/v1/classify"] = {
            "post": {
                "operationId": "classify",
                "summary": "Classify many items (gRPC Classify): all are accepted or none",
                "parameters": [TIMEOUT],
                "requestBody": {"required": True, "content": _json("ClassifyRequest")},
                "responses": {
                    "200": {
                        "description": "One result per item, in order",
                        "content": _json("ClassifyResponse"),
                    },
                    **_errors("400", "401", "413", "415", "421", "429", "500", "503", "504"),
                },
            }
        }
        paths["/v1/classify/stream"] = {
            "post": {
                "operationId": "classifyStream",
                "summary": "Classify a stream (gRPC ClassifyStream): NDJSON in, NDJSON out, in order",
                "description": (
                    "Each request line is a ClassifyStreamRequest; each response line a "
                    "ClassifyStreamResponse, one per item in input order. The server keeps at most "
                    "limits.streamMaxInFlight items unanswered and stops reading meanwhile. An item "
                    "that fails alone has result.error set; a call-wide failure after the first "
                    "result ends the stream with an ErrorResponse line."
                ),
                "parameters": [TIMEOUT],
                "requestBody": {
                    "required": False,  # an empty body is an empty stream, as in gRPC
                    "content": {"application/x-ndjson": {"schema": _ref("ClassifyStreamRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "One ClassifyStreamResponse per line",
                        "content": {"application/x-ndjson": {"schema": _ref("ClassifyStreamResponse")}},
                    },
                    **_errors("400", "401", "413", "415", "421", "429", "500", "503", "504"),
                },
            }
        }
        paths.update(session_paths())
        paths["/v1/model"] = {
            "get": {
                "operationId": "getModelInfo",
                "summary": "The loaded model and the limits this server enforces (gRPC GetModelInfo)",
                "responses": {
                    "200": {"description": "Model info", "content": _json("GetModelInfoResponse")},
                    **_errors("503"),
                },
            }
        }
        paths["/v1/label-sets"] = {
            "get": {
                "operationId": "listLabelSets",
                "summary": "The configured label sets (gRPC ListLabelSets)",
                "responses": {
                    "200": {"description": "Label sets", "content": _json("ListLabelSetsResponse")}
                },
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "gliclass-stream HTTP API",
            "version": "v1",
            "description": (
                "The gliclass.v1.Classifier service over HTTP/JSON. Bodies are the proto3 JSON "
                "mapping of the gRPC messages, with the proto JSON names (camelCase); requests "
                "may also use the proto's snake_case names."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas},
    }


SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "description": "The conversation: at most [sessions] max_session_id_length characters",
    "schema": {"type": "string", "minLength": 1},
}


def session_paths() -> dict[str, Any]:
    """The `/v1/sessions` operations (gRPC ClassifySession; decoder-kv models only)."""
    errors = _errors("400s", "401", "413", "415", "421", "429", "500", "503", "504")
    return {
        "/v1/sessions": {
            "post": {
                "operationId": "classifySessions",
                "summary": "Append chunks to sessions (gRPC ClassifySession): NDJSON in and out, in order",
                "description": (
                    "Each request line is a SessionRequest naming its sessionId; each response line "
                    "the SessionResponse of one line, in input order (result set when the session's "
                    "strategy fired). A line that fails alone (not JSON, a bad field, a limit) has "
                    "error set and the stream goes on; a call-wide failure after the first answer "
                    "ends the stream with an ErrorResponse line."
                ),
                "parameters": [TIMEOUT],
                "requestBody": {
                    "required": False,
                    "content": {"application/x-ndjson": {"schema": _ref("SessionRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "One SessionResponse per line",
                        "content": {"application/x-ndjson": {"schema": _ref("SessionResponse")}},
                    },
                    **errors,
                },
            }
        },
        "/v1/sessions/{session_id}": {
            "post": {
                "operationId": "appendSession",
                "summary": "Append one chunk to a session (created on first use), scored by its strategy",
                "description": (
                    "The body is a SessionRequest without sessionId (the path names the session). "
                    "Without labels and labelSet, the session's previous labels apply."
                ),
                "parameters": [SESSION_ID, TIMEOUT],
                "requestBody": {"required": True, "content": _json("SessionRequest")},
                "responses": {
                    "200": {
                        "description": "The session after the chunk",
                        "content": _json("SessionResponse"),
                    },
                    **errors,
                },
            },
            "delete": {
                "operationId": "closeSession",
                "summary": "Close a session now (after its queued chunks); closed: false if not open",
                "parameters": [SESSION_ID],
                "responses": {
                    "200": {"description": "Closed", "content": _json("SessionResponse")},
                    **_errors("400s", "401", "421", "503"),
                },
            },
        },
    }


def stats_schemas() -> dict[str, Any]:
    """Schemas of GET /v1/stats (server.http.live): the console's live figures.

    Open to new keys (additionalProperties): the figures grow with the console.
    """
    number = {"type": "number"}
    maybe = {"type": "number", "nullable": True}
    percentiles = {
        "type": "object",
        "properties": {"p50_ms": maybe, "p99_ms": maybe},
        "required": ["p50_ms", "p99_ms"],
    }
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    return {
        "StatsPercentiles": percentiles,
        "StatsEdge": {
            "type": "object",
            "properties": {
                "items": {"type": "integer"},
                "items_per_s": number,
                "latency": _ref("StatsPercentiles"),
            },
            "required": ["items", "items_per_s"],
        },
        "StatsLag": {
            "type": "object",
            "properties": {
                "topic": {"type": "string"},
                "partition": {"type": "integer"},
                "lag": {"type": "integer"},
            },
            "required": ["topic", "partition", "lag"],
        },
        "StatsBatch": {
            "type": "object",
            "properties": {"batches_per_s": number, "mean_size": maybe, "padding_efficiency": maybe},
            "required": ["batches_per_s"],
        },
        "Stats": {
            "type": "object",
            "properties": {
                "window_s": number,
                "history_s": number,
                "edges": {"type": "object", "additionalProperties": _ref("StatsEdge")},
                "completed_per_s": number,
                "queue_depth": counts,
                "in_flight_batches": {"type": "integer"},
                "queue": _ref("StatsPercentiles"),
                "compute": _ref("StatsPercentiles"),
                "batch": _ref("StatsBatch"),
                "consumer_lag": {"type": "array", "items": _ref("StatsLag")},
                "dead_letters": counts,
                "labels_by_route": {"type": "object", "additionalProperties": counts},
            },
            "required": ["window_s", "edges"],
        },
    }


def main() -> None:
    json.dump(build_openapi(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
