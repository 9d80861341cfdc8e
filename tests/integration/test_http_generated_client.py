"""A client generated from the served OpenAPI document classifies a text against a real server.

openapi-python-client (pinned in [test]) reads /openapi.json as a user's build would; the generated
package is imported and called as its README shows. Its NDJSON stream endpoints are left out by the
generator (it supports JSON bodies only), which it reports as warnings; everything else is generated.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture(scope="module")
def generated_client(http_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    generator = str(GENERATOR) if GENERATOR.exists() else shutil.which("openapi-python-client")
    if generator is None:
        pytest.skip("openapi-python-client is not installed (pip install -r requirements/lock.txt)")
    out = tmp_path_factory.mktemp("generated")
    document = out / "openapi.json"
    document.write_text(json.dumps(requests.get(http_stack.url + "/openapi.json", timeout=10).json()))
    done = subprocess.run(
        [
            generator,
            "generate",
            "--path",
            str(document),
            "--meta",
            "none",
            "--output-path",
            "gliclass_client",
        ],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The only things it may leave out are the NDJSON streams.
    skipped = [
        line for line in (done.stdout + done.stderr).splitlines() if line.startswith("WARNING parsing")
    ]
    assert skipped == [
        "WARNING parsing POST /v1/classify/stream within default. Endpoint will not be generated.",
        "WARNING parsing POST /v1/sessions within default. Endpoint will not be generated.",
    ]
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("gliclass_client")
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == "gliclass_client" or m.startswith("gliclass_client.")]:
            del sys.modules[name]


def test_generated_client_classifies_a_text(generated_client: Any, http_stack: Any) -> None:
    from gliclass_client import Client
    from gliclass_client.api.default import classify, get_model_info, stats
    from gliclass_client.models import ClassifyRequest, ClassifyResponse, ErrorResponse, Item

    client = Client(base_url=http_stack.url, raise_on_unexpected_status=True)
    labels = ["billing", "bug", "feature request"]
    body = ClassifyRequest(items=[Item(text="I was charged twice this month", labels=labels, id="t1")])
    reply = classify.sync(client=client, body=body)
    assert isinstance(reply, ClassifyResponse)
    [result] = reply.results
    assert result.id == "t1" and [s.label for s in result.scores] == labels
    assert all(0.0 <= s.score <= 1.0 for s in result.scores)
    # The same call over raw HTTP gives the same scores: the client sent what the document says.
    raw = requests.post(
        http_stack.url + "/v1/classify",
        json={"items": [{"text": body.items[0].text, "labels": labels}]},
        timeout=30,
    ).json()["results"][0]
    assert [s.score for s in result.scores] == pytest.approx([s["score"] for s in raw["scores"]], abs=1e-5)

    # An error status parses into its typed model, naming the field.
    bad = classify.sync_detailed(client=client, body=ClassifyRequest(items=[Item(text="", labels=labels)]))
    assert bad.status_code == 400 and isinstance(bad.parsed, ErrorResponse)
    assert bad.parsed.error.field == "text" and bad.parsed.error.status == "INVALID_ARGUMENT"

    info = get_model_info.sync(client=client)
    assert info is not None and info.max_labels == info.limits.max_labels_per_item
    figures = stats.sync(client=client)
    assert figures is not None and figures.window_s >= 0


def test_generated_client_session_call_on_a_model_without_sessions(
    generated_client: Any, http_stack: Any
) -> None:
    # The builtin model keeps no sessions: the typed error says so (FAILED_PRECONDITION, HTTP 400).
    from gliclass_client import Client
    from gliclass_client.api.default import append_session, close_session
    from gliclass_client.models import ErrorResponse, SessionRequest

    client = Client(base_url=http_stack.url, raise_on_unexpected_status=True)
    reply = append_session.sync_detailed("t-1", client=client, body=SessionRequest(text="hi", labels=["a"]))
    assert reply.status_code == 400 and isinstance(reply.parsed, ErrorResponse)
    assert reply.parsed.error.status == "FAILED_PRECONDITION"
    assert "decoder-kv" in reply.parsed.error.message
    closed = close_session.sync_detailed("t-1", client=client)
    assert closed.status_code == 400 and isinstance(closed.parsed, ErrorResponse)
    assert closed.parsed.error.status == "FAILED_PRECONDITION"
