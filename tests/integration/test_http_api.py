"""The HTTP/JSON API beside gRPC: same servicer, scheduler, limits and errors (real servers, port 0).

Each case mirrors one in test_grpc_service.py / test_grpc_flow.py, so the two transports are held
to the same semantics: a result equals gRPC's, a bad item is 400 naming the same field and index.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fixtures.grpc import TEST_LABEL_SETS, grpc_app_config, make_runtime
from fixtures.http import HttpStack
from google.protobuf import json_format

from gliclass_core.errors import Overloaded
from gliclass_core.runtime import Priority
from gliclass_core.types import ClassifyItem
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc

SUPPORT = TEST_LABEL_SETS["support"]["labels"]
TEXTS = [
    "I was charged twice for my subscription this month",
    "The app crashes every time I open the settings page",
    "Please add a dark mode to the dashboard",
]
LONG_TEXT = " ".join(["the invoice total looked wrong after the latest update to the billing page"] * 25)


def post(stack: HttpStack, path: str, body: Any, **kwargs: Any) -> requests.Response:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    kind = "application/x-ndjson" if path.endswith("/stream") else "application/json"
    kwargs["headers"] = {"Content-Type": kind, **kwargs.get("headers", {})}
    return requests.post(stack.url + path, data=data, timeout=60, **kwargs)


def ndjson(response: requests.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


@pytest.fixture
def grpc_stub(http_stack: HttpStack) -> Iterator[Any]:
    import grpc

    with grpc.insecure_channel(http_stack.grpc_address) as channel:
        yield classifier_pb2_grpc.ClassifierStub(channel)


def test_classify_equals_grpc_in_the_protos_json_mapping(http_stack: HttpStack, grpc_stub: Any) -> None:
    items = [{"id": f"t{i}", "text": t, "labels": SUPPORT} for i, t in enumerate(TEXTS)]
    items.append({"id": "set", "text": TEXTS[0], "label_set": "support", "topK": 1, "threshold": 0.0})
    response = post(http_stack, "/v1/classify", {"items": items})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    results = response.json()["results"]
    request = json_format.ParseDict({"items": items}, pb.ClassifyRequest())
    expected = grpc_stub.Classify(request, timeout=30).results
    assert [r["id"] for r in results] == ["t0", "t1", "t2", "set"]
    for got, want in zip(results, expected):
        assert [s["label"] for s in got["scores"]] == [s.label for s in want.scores]
        assert [s["score"] for s in got["scores"]] == pytest.approx([s.score for s in want.scores], abs=1e-4)
        assert got["labels"] == list(want.labels)
        # camelCase names and every field, as json_format writes the proto's JSON mapping
        assert {"labelChunks", "truncated", "labelSet", "timings"} <= set(got)
        assert got["timings"]["computeMs"] > 0 and got["timings"]["totalMs"] >= got["timings"]["computeMs"]
    assert results[3]["labelSet"] == "support" and len(results[3]["labels"]) == 1


@pytest.mark.parametrize(
    ("bad_item", "field"),
    [
        ({"text": "", "labels": ["a"]}, "text"),
        ({"text": "x" * 4001, "labels": ["a"]}, "text"),
        ({"text": "hello"}, "labels"),
        ({"text": "hello", "labels": [f"l{i}" for i in range(17)]}, "labels"),
        ({"text": "hello", "label_set": "no-such-set"}, "label_set"),
        ({"text": "hello", "labels": ["a"], "threshold": 2.0}, "threshold"),
    ],
)
def test_invalid_item_is_400_naming_field_and_index(http_stack: HttpStack, bad_item: Any, field: str) -> None:
    good = {"text": "fine", "labels": ["a", "b"]}
    response = post(http_stack, "/v1/classify", {"items": [good, good, bad_item]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["status"], error["code"], error["field"]) == ("INVALID_ARGUMENT", 3, field)
    assert f"item 2, field '{field}'" in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"items": [{"txt": "hello", "labels": ["a"]}]}', "txt"),
        (b'{"items": [{"text": 5, "labels": ["a"]}]}', "text"),
        (b'{"items": "many"}', "items"),
        (b'{"items": [{"text": "a", "labels": ["a"], "topK": -1}]}', "top_k"),
        (b'{"items": [{"text": "a", "labels": ["a"], "threshold": 1e300}]}', "threshold"),
        (b'{"items": [{"text": "a", "labelThresholds": {"a": "high"}}]}', "label_thresholds"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
    ],
)
def test_body_that_is_not_the_json_mapping_is_400_naming_the_field(
    http_stack: HttpStack, body: bytes, field: str
) -> None:
    response = post(http_stack, "/v1/classify", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field


def test_request_limits(http_stack: HttpStack) -> None:
    item = {"text": "fine", "labels": ["a"]}
    response = post(http_stack, "/v1/classify", {"items": [item] * 33})
    assert response.status_code == 400 and "limit is 32" in response.json()["error"]["message"]
    response = post(http_stack, "/v1/classify", {})
    assert response.status_code == 400 and response.json()["error"]["field"] == "items"
    # Over max_message_bytes (256 KiB) the body is refused before it is parsed, as gRPC does.
    response = post(http_stack, "/v1/classify", {"items": [{"text": "x" * 300_000, "labels": ["a"]}]})
    assert response.status_code == 413


def test_bad_timeout_header_is_400(http_stack: HttpStack) -> None:
    for value in ("soon", "-5", "0", "nan", "inf"):
        response = post(
            http_stack,
            "/v1/classify",
            {"items": [{"text": "a", "labels": ["a"]}]},
            headers={"X-Timeout-Ms": value},
        )
        assert response.status_code == 400 and response.json()["error"]["field"] == "X-Timeout-Ms"


def test_stream_answers_in_order_with_bad_items_inline(http_stack: HttpStack, grpc_stub: Any) -> None:
    lines = [{"items": [{"id": f"s{i}", "text": t, "labels": SUPPORT}]} for i, t in enumerate(TEXTS * 3)]
    lines.insert(2, {"items": [{"id": "pair-a", "text": TEXTS[0], "label_set": "support"},
                               {"id": "pair-b", "text": TEXTS[1], "labelSet": "support"}]})  # fmt: skip
    lines.insert(5, {"items": [{"id": "bad", "text": "oops"}]})
    body = "\n".join(json.dumps(line) for line in lines) + "\n\n"
    response = post(http_stack, "/v1/classify/stream", body, headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/x-ndjson"
    out = ndjson(response)
    assert [r["result"]["id"] for r in out] == [item["id"] for line in lines for item in line["items"]]
    bad = next(r["result"] for r in out if r["result"]["id"] == "bad")
    assert (bad["error"]["status"], bad["error"]["field"]) == ("INVALID_ARGUMENT", "labels")
    assert "item 6" in bad["error"]["message"]  # its index in the stream (the pair counts as two)
    unary = grpc_stub.Classify(pb.ClassifyRequest(items=[pb.Item(text=TEXTS[1], labels=SUPPORT)]), timeout=30)
    streamed = next(r["result"] for r in out if r["result"]["id"] == "s1")
    assert [s["score"] for s in streamed["scores"]] == pytest.approx(
        [s.score for s in unary.results[0].scores], abs=1e-4
    )


def test_stream_bad_line_ends_the_stream_with_an_error_line(http_stack: HttpStack) -> None:
    first = json.dumps({"items": [{"id": "ok", "text": TEXTS[0], "labels": SUPPORT}]})
    response = post(http_stack, "/v1/classify/stream", f"{first}\n{{oops\n{first}\n")
    out = ndjson(response)
    assert response.status_code == 200 and out[0]["result"]["id"] == "ok"
    assert out[-1]["error"]["status"] == "INVALID_ARGUMENT" and "line 2" in out[-1]["error"]["message"]
    assert len(out) == 2
    # Before any result the failure is the response's status.
    response = post(http_stack, "/v1/classify/stream", "{oops\n")
    assert response.status_code == 400 and response.json()["error"]["field"] == "body"
    # A line over the message limit is refused without reading it whole.
    response = post(http_stack, "/v1/classify/stream", b"x" * 300_000)
    assert response.status_code in (400, 413)


def test_stream_with_no_items_is_an_empty_200(http_stack: HttpStack) -> None:
    response = post(http_stack, "/v1/classify/stream", '{"items": []}\n')
    assert response.status_code == 200 and response.text == ""


def test_model_info_and_label_sets_equal_grpc(http_stack: HttpStack, grpc_stub: Any) -> None:
    def as_json(message: Any) -> dict[str, Any]:
        return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)

    model = requests.get(http_stack.url + "/v1/model", timeout=30)
    assert model.status_code == 200
    assert model.json() == as_json(grpc_stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30))
    assert model.json()["limits"]["maxItemsPerRequest"] == 32
    sets = requests.get(http_stack.url + "/v1/label-sets", timeout=30).json()
    assert sets == as_json(grpc_stub.ListLabelSets(pb.ListLabelSetsRequest(), timeout=30))
    assert [s["name"] for s in sets["labelSets"]] == ["sentiment", "support"]


def test_probes_and_draining(http_stack: HttpStack) -> None:
    assert requests.get(http_stack.url + "/healthz", timeout=10).json() == {"status": "ok"}
    assert requests.get(http_stack.url + "/readyz", timeout=10).status_code == 200
    # `stop()` sets this flag first; with it set, new work and readiness are refused (503).
    http_stack.http.draining = True
    try:
        ready = requests.get(http_stack.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["reason"] == "draining"
        response = post(http_stack, "/v1/classify", {"items": [{"text": "a", "labels": ["a"]}]})
        assert response.status_code == 503 and response.json()["error"]["status"] == "UNAVAILABLE"
        session = post(http_stack, "/v1/sessions/a", {"text": "a", "labels": ["a"]})
        assert session.status_code == 503 and session.json()["error"]["status"] == "UNAVAILABLE"
        assert requests.get(http_stack.url + "/healthz", timeout=10).status_code == 200
    finally:
        http_stack.http.draining = False


def test_session_stream_on_a_model_without_sessions_answers_each_line_failed_precondition(
    http_stack: HttpStack,
) -> None:
    # The builtin model keeps no sessions: each line is answered in order, none ends the stream.
    lines = [{"sessionId": f"s{i}", "text": "hi", "labels": ["a"]} for i in range(3)]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    response = post(http_stack, "/v1/sessions", body, headers={"Content-Type": "application/x-ndjson"})
    answers = ndjson(response)
    assert response.status_code == 200 and [a["sessionId"] for a in answers] == ["s0", "s1", "s2"]
    assert {a["error"]["status"] for a in answers} == {"FAILED_PRECONDITION"}


def test_deadline_is_504(http_stack: HttpStack, grpc_runtime: Any) -> None:
    # Queue work the call must wait behind, so its 50 ms deadline passes while it is queued.
    filler = grpc_runtime.scheduler.submit(
        [ClassifyItem(LONG_TEXT, tuple(SUPPORT))] * 64, priority=Priority.INTERACTIVE
    )
    try:
        response = post(
            http_stack,
            "/v1/classify",
            {"items": [{"text": LONG_TEXT, "labels": SUPPORT}]},
            headers={"X-Timeout-Ms": "50"},
        )
        assert response.status_code == 504 and response.json()["error"]["status"] == "DEADLINE_EXCEEDED"
    finally:
        for future in filler:
            future.cancel()


def test_full_queue_is_429_and_not_ready_is_503() -> None:
    runtime = make_runtime(grpc_app_config(max_queue=16, max_batch_size=1), start=False)
    stack = HttpStack(runtime)
    filler: list[Any] = []
    try:
        item = {"text": "my card was charged", "labels": SUPPORT}
        response = post(stack, "/v1/classify", {"items": [item]})
        assert response.status_code == 503 and response.json()["error"]["status"] == "UNAVAILABLE"
        assert requests.get(stack.url + "/v1/model", timeout=10).status_code == 503
        ready = requests.get(stack.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["reason"] == "loading"
        runtime.start()
        assert runtime.wait_ready(120)
        assert requests.get(stack.url + "/readyz", timeout=10).status_code == 200
        while True:  # fill the 16-slot queue straight through the scheduler
            try:
                filler.extend(runtime.scheduler.submit([ClassifyItem(LONG_TEXT, tuple(SUPPORT))]))
            except Overloaded:
                break
        response = post(stack, "/v1/classify", {"items": [item] * 8})
        assert response.status_code == 429 and response.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    finally:
        for future in filler:
            future.cancel()
        stack.close()
        runtime.stop(grace_s=1)


def test_openapi_served_is_the_committed_document(http_stack: HttpStack) -> None:
    from pathlib import Path

    committed = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    assert requests.get(http_stack.url + "/openapi.json", timeout=10).json() == committed
