"""`gliclass-stream classify` as a user runs it: a real process, the builtin model, JSON lines out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.cli import run_classify


@pytest.fixture(scope="module")
def cache(builtin_classifier, gliclass_cache: Path) -> Path:
    return gliclass_cache  # already materialised by the session fixture: no rebuild per process


def test_texts_as_arguments(cache: Path) -> None:
    proc = run_classify(
        ["--labels", "billing,sports", "--threshold", "0.5", "I was charged twice", "The Lakers won"], cache
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [x["text"] for x in lines] == ["I was charged twice", "The Lakers won"]
    assert lines[0]["labels"][0] == "billing" and lines[1]["labels"][0] == "sports"
    assert set(lines[0]["scores"]) == {"billing", "sports"}


def test_json_lines_on_stdin_with_a_bad_line(cache: Path) -> None:
    stdin = "\n".join(
        [
            json.dumps({"text": "please refund my payment"}),
            "this is not json",
            json.dumps({"text": "the app crashes", "labels": ["bug report", "cooking"]}),
            json.dumps({"text": ""}),
        ]
    )
    proc = run_classify(["--labels", "billing,bug report", "--single-label"], cache, stdin)
    assert proc.returncode == 1  # some lines failed; the others were still classified
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(out) == 4
    assert out[0]["labels"] == ["billing"]
    assert out[1]["line"] == 2 and "JSON" in out[1]["error"]
    assert out[2]["labels"] == ["bug report"] and set(out[2]["scores"]) == {"bug report", "cooking"}
    assert out[3]["line"] == 4 and "text" in out[3]["error"]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--labels", "a,,b", "text"], "empty label"),
        (["--labels", "a,a", "text"], "duplicate"),
        (["text"], "--labels"),
        (["--model", "/definitely/not/here", "--labels", "a", "text"], "no such checkpoint"),
    ],
)
def test_bad_input_is_a_clean_error(cache: Path, args: list[str], words: str) -> None:
    proc = run_classify(args, cache)
    assert proc.returncode == 2
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
