"""`gliclass-stream classify` with hierarchical labels and long-text chunking, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.cli import run_classify


@pytest.fixture(scope="module")
def cache(builtin_classifier: Any, gliclass_cache: Path) -> Path:
    return gliclass_cache


LABELS = {"topic": ["billing", "sports"], "mood": {"tone": ["angry"]}}
TEXT = "I was charged twice for my card. " * 8 + "Also the Lakers won."


def test_nested_labels_chunked_text_and_hierarchy(cache: Path, builtin_classifier: Any) -> None:
    chunking = ["--long-text", "chunk", "--text-chunk-size", "120", "--text-chunk-overlap", "10"]
    proc = run_classify(["--labels", json.dumps(LABELS), "--hierarchical", *chunking, TEXT], cache)
    assert proc.returncode == 0, proc.stderr
    (line,) = [json.loads(x) for x in proc.stdout.splitlines()]
    offline = builtin_classifier.classify([TEXT], LABELS, long_text="chunk", text_chunk_size=120,
                                          text_chunk_overlap=10, return_hierarchical=True)[0]  # fmt: skip
    assert list(line["scores"]) == ["topic.billing", "topic.sports", "mood.tone.angry"]
    assert line["scores"] == pytest.approx(offline.scores, abs=1e-5)
    assert line["text_chunks"] == offline.text_chunks > 1
    assert set(line["hierarchy"]) == {"topic", "mood"} and set(line["hierarchy"]["mood"]["tone"]) == {"angry"}
    stdin = "\n".join(
        [
            json.dumps({"text": "refund please", "labels": {"g": ["billing"]}}),
            json.dumps({"text": "x", "labels": 3}),
        ]
    )
    proc = run_classify(["--hierarchical"], cache, stdin=stdin)
    assert proc.returncode == 1
    first, second = [json.loads(x) for x in proc.stdout.splitlines()]
    assert (
        list(first["hierarchy"]["g"]) == ["billing"] and second["line"] == 2 and "labels" in second["error"]
    )
    bad = run_classify(["--labels", "{not json", "hi"], cache)
    assert bad.returncode == 2 and "--labels" in bad.stderr
    bad = run_classify(["--labels", "a,b", "--long-text", "chunk", "--text-chunk-size", "5", "hi"], cache)
    assert bad.returncode == 2 and "text_chunk_overlap" in bad.stderr
