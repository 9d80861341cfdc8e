"""The committed OpenAPI document is what the server builds, and its schemas are the proto's JSON mapping."""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import json_format

from server.http.config import HttpConfig, parse_http_config
from server.http.openapi import build_openapi
from server.proto import classifier_pb2 as pb

COMMITTED = Path(__file__).parents[2] / "docs" / "openapi.json"


def test_committed_openapi_has_not_drifted() -> None:
    assert json.loads(COMMITTED.read_text()) == build_openapi(), (
        "docs/openapi.json is stale: python -m server.http.openapi > docs/openapi.json"
    )


def test_every_proto_message_and_field_is_in_the_schemas() -> None:
    schemas = build_openapi()["components"]["schemas"]
    for name, descriptor in pb.DESCRIPTOR.message_types_by_name.items():
        assert {f.json_name for f in descriptor.fields} <= set(schemas[name]["properties"]), name
    # What json_format writes for a full result uses only the names the schema lists.
    result = pb.ItemResult(
        id="a", scores=[pb.LabelScore(label="x", score=0.5)], labels=["x"], timings=pb.Timings(total_ms=1.0)
    )
    written = json_format.MessageToDict(result, always_print_fields_with_no_presence=True)
    assert set(written) <= set(schemas["ItemResult"]["properties"])
    # One spelling per field (the proto JSON name): a second one makes generated models collide.
    for name, schema in schemas.items():
        if name in pb.DESCRIPTOR.message_types_by_name:
            fields = pb.DESCRIPTOR.message_types_by_name[name].fields
            assert set(schema["properties"]) == {f.json_name for f in fields}, name
    assert schemas["Item"]["required"] == ["text"] and schemas["ClassifyRequest"]["required"] == ["items"]


def test_every_response_and_error_status_has_a_typed_schema() -> None:
    for path, operations in build_openapi()["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                assert response.get("content"), f"{method.upper()} {path} {status} has no schema"
                for media in response["content"].values():
                    schema = media["schema"]
                    assert "$ref" in schema or schema.get("type") == "string", (path, status, schema)
    stats = build_openapi()["paths"]["/v1/stats"]["get"]["responses"]["200"]["content"]
    assert stats["application/json"]["schema"] == {"$ref": "#/components/schemas/Stats"}


def test_worker_document_has_no_classify_operations() -> None:
    paths = build_openapi(with_classify=False)["paths"]
    assert "/metrics" in paths and not any(p.startswith("/v1/classify") for p in paths)


def test_http_config() -> None:
    assert parse_http_config({}) == HttpConfig() and not HttpConfig().enabled
    config = parse_http_config({"address": "0.0.0.0:8080", "console": False})
    assert config.enabled and config.host_port == ("0.0.0.0", 8080) and not config.console
    import pytest

    from gliclass_core.config import ConfigError

    for bad in ({"address": "8080"}, {"address": "h:99999"}, {"address": 5}, {"console": "yes"}, {"x": 1}):
        with pytest.raises(ConfigError, match=r"\[http\]"):
            parse_http_config(bad)
