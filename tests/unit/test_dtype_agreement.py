"""bf16's answers on the builtin model stay those of exact float32 on real held-out news.

The figure users rely on (docs/performance.md: top-1 agreement and macro-F1 of bf16 against float32,
benchmarks/dtype_agreement.py over 300 rows) checked on a CI-sized slice, so a change to the bf16
path that moves decisions fails here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch

# Each test loads a second copy of the builtin (int8: exports and quantises it): about a minute on an
# idle 2-core machine, several under load, hence the longer timeout.
SLOW = pytest.mark.timeout(900)
ROWS = 32  # the first rows of heldout.jsonl: every label set of its opening part, some seconds of work
DATA = Path(__file__).resolve().parents[2] / "data" / "builtin_eval" / "heldout.jsonl"


def _predict(clf: Any, rows: list[dict]) -> list[Any]:
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[tuple(row["all_labels"])].append(i)
    out: list[Any] = [None] * len(rows)
    for labels, members in groups.items():
        for i, pred in zip(members, clf.classify([rows[i]["text"] for i in members], list(labels))):
            out[i] = pred
    return out


@SLOW
def test_bf16_keeps_the_builtins_decisions(builtin_classifier: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Top-1 label and the labels over the default threshold: at most one row of 32 may move.

    Where the CPU lacks native bf16, `dtype="bf16"` would run float32; the CPU's flags are replaced
    (the one fake here) so torch's emulated bf16 runs: the same number format, so the same decisions.
    """
    from gliclass_core import Classifier, devices

    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    bf16 = Classifier.from_pretrained("builtin:minilm", device="cpu", dtype="bf16")
    assert bf16.info.dtype == "bfloat16"
    assert next(bf16.network.parameters()).dtype == torch.bfloat16
    rows = [json.loads(line) for line in DATA.read_text().splitlines()[:ROWS]]
    exact = _predict(builtin_classifier, rows)
    fast = _predict(bf16, rows)
    top1 = sum(
        max(a.scores, key=a.scores.get) == max(b.scores, key=b.scores.get) for a, b in zip(fast, exact)
    )
    same_labels = sum(set(a.labels) == set(b.labels) for a, b in zip(fast, exact))
    worst = max(abs(a.scores[k] - b.scores[k]) for a, b in zip(fast, exact) for k in b.scores)
    assert top1 >= ROWS - 1, f"top-1 agreement {top1}/{ROWS}"
    assert same_labels >= ROWS - 1, f"same predicted labels {same_labels}/{ROWS}"
    assert worst < 0.1, f"max |score difference| {worst:.3f}"


@SLOW
def test_int8_keeps_the_builtins_top_decisions(builtin_classifier: Any) -> None:
    """int8 (ONNX Runtime, FFN down-projection in fp32): top-1 labels and scores stay near float32.

    Quantising every linear layer moved about one row in 25 on 300 held-out news rows
    (docs/performance.md); keeping the down-projection in fp32 about one in 150.
    """
    pytest.importorskip("onnxruntime")
    from gliclass_core import Classifier

    int8 = Classifier.from_pretrained("builtin:minilm", engine="onnx", dtype="int8")
    rows = [json.loads(line) for line in DATA.read_text().splitlines()[:ROWS]]
    exact = _predict(builtin_classifier, rows)
    fast = _predict(int8, rows)
    top1 = sum(
        max(a.scores, key=a.scores.get) == max(b.scores, key=b.scores.get) for a, b in zip(fast, exact)
    )
    diffs = [abs(a.scores[k] - b.scores[k]) for a, b in zip(fast, exact) for k in b.scores]
    assert top1 >= ROWS - 2, f"top-1 agreement {top1}/{ROWS}"
    # On these rows the down-projection in fp32 gave max 0.080 / mean 0.0075 (AVX2 machine); every
    # linear layer int8 gave 0.159 / 0.0145, so these bounds fail if that returns.
    assert max(diffs) < 0.12, f"max |score difference| {max(diffs):.3f}"
    assert sum(diffs) / len(diffs) < 0.011, f"mean |score difference| {sum(diffs) / len(diffs):.4f}"
