"""A Node client (@grpc/grpc-js + @grpc/proto-loader) loads the public .proto and calls the real server."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fixtures.npm import npm_modules

from server.proto import classifier_pb2 as pb
from server.proto.generate import PROTO_ROOT

CLIENT_DIR = Path(__file__).parent / "node_client"
LABELS = ["billing", "bug report", "feature request"]
TEXTS = [
    "I was charged twice for my subscription this month",
    "The app crashes every time I open the settings page",
    "Please add a dark mode to the dashboard",
]


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node client test needs Node.js >= 18")
    npm_modules(CLIENT_DIR, "@grpc/grpc-js")  # `npm ci` once per session, or a skip saying why
    return node


def test_node_client_classifies_over_unary_and_stream(
    node: str, grpc_server: Any, classifier_stub: Any
) -> None:
    done = subprocess.run(
        [node, "client.js", grpc_server.address, str(PROTO_ROOT)],
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)

    items = [pb.Item(text=t, labels=LABELS) for t in TEXTS]
    expected = classifier_stub.Classify(pb.ClassifyRequest(items=items), timeout=30).results

    unary = out["classify"]
    assert [r["id"] for r in unary] == ["u0", "u1", "u2", "set"]
    for got, want in zip(unary, expected):
        assert [label for label, _ in got["scores"]] == LABELS
        assert [score for _, score in got["scores"]] == pytest.approx(
            [s.score for s in want.scores], abs=1e-4
        )
        assert got["labels"] == list(want.labels) and got["error"] is None
    # An explicit threshold of 0 (proto3 optional presence) predicts every label of the set.
    assert sorted(unary[3]["labels"]) == sorted(LABELS)

    stream = out["stream"]
    assert [r["id"] for r in stream] == ["s0", "s1", "s2", "bad", "last"]
    assert stream[3]["error"] == "INVALID_ARGUMENT" and stream[3]["scores"] == []
    for got, want in zip(stream[:3], expected):
        assert [score for _, score in got["scores"]] == pytest.approx(
            [s.score for s in want.scores], abs=1e-4
        )
    assert stream[4]["labels"] == list(expected[2].labels)

    assert out["error"]["code"] == "INVALID_ARGUMENT"
    assert "item 0, field 'text'" in out["error"]["details"]
