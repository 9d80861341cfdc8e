"""`train` / `eval` reject bad input with a clear message and exit status 2, before loading any model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.app.cli import main


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"text": "t", "all_labels": ["a", "b"], "true_labels": ["a"]}


def test_encoder_without_arch_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write(tmp_path / "d.jsonl", [GOOD])
    assert main(["train", "--encoder", "x", "--data", str(data), "--output", str(tmp_path / "o")]) == 2
    assert "--arch" in capsys.readouterr().err


def test_a_bad_training_line_names_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write(tmp_path / "d.jsonl", [GOOD, {"text": "t", "all_labels": ["a"], "true_labels": ["zzz"]}])
    argv = ["train", "--model", "builtin:minilm", "--data", str(data), "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "d.jsonl:2" in err and "true_labels" in err and "zzz" in err


def test_eval_rejects_missing_file_and_bad_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "--model", "builtin:minilm", "--data", str(tmp_path / "none.jsonl")]) == 2
    assert "file not found" in capsys.readouterr().err
    data = write(tmp_path / "d.jsonl", [GOOD])
    assert main(["eval", "--model", "builtin:minilm", "--data", str(data), "--threshold", "2"]) == 2
    assert "threshold" in capsys.readouterr().err
