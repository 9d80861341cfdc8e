"""`gliclass-stream classify --engine onnx --dtype int8` as a user runs it (real processes).

A fresh cache: the first run builds the export, prints the measured agreement on stderr, and
classifies; the second reuses the cached export (prints no agreement) and gives the same output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.cli import run_classify

pytest.importorskip("onnxruntime")
# The first run exports and quantises the encoders.
TIMEOUT_S = 600


def test_int8_engine_builds_once_reports_agreement_and_classifies(tmp_path: Path) -> None:
    args = ["--engine", "onnx", "--dtype", "int8", "--labels", "billing,sports",
            "I was charged twice for my order", "The Lakers won the game"]  # fmt: skip
    first = run_classify(args, tmp_path, timeout=TIMEOUT_S)
    assert first.returncode == 0, first.stderr
    assert "engine onnx int8 vs torch float32" in first.stderr and "top-1 agreement" in first.stderr
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert [x["labels"][:1] for x in lines] == [["billing"], ["sports"]]
    assert list((tmp_path / "onnx").glob("encoder-*-int8.onnx"))
    second = run_classify(args, tmp_path, timeout=TIMEOUT_S)
    assert second.returncode == 0, second.stderr
    assert "vs torch float32" not in second.stderr  # cached: not rebuilt, not re-measured
    assert second.stdout == first.stdout


def test_int8_without_the_onnx_engine_is_a_clean_error(tmp_path: Path) -> None:
    proc = run_classify(["--dtype", "int8", "--labels", "a,b", "text"], tmp_path)
    assert proc.returncode == 2
    assert "int8" in proc.stderr and "onnx" in proc.stderr and "Traceback" not in proc.stderr
