"""`gliclass-stream eval` on the builtin model reports F1, the gold-predicted share and labels per text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.app.cli import main

ROWS = [
    {"text": "I was charged twice for my subscription", "all_labels": ["billing", "sport", "weather"],
     "true_labels": ["billing"]},
    {"text": "The striker scored twice in the derby", "all_labels": ["billing", "sport", "weather"],
     "true_labels": ["sport"]},
    {"text": "Heavy rain and wind expected tomorrow", "all_labels": ["billing", "sport", "weather"],
     "true_labels": ["weather"]},
    {"text": "Heavy rain and wind expected tomorrow", "all_labels": ["billing", "sport"], "true_labels": []},
]  # fmt: skip


def test_eval_reports_gold_share_and_labels_per_text(
    builtin_classifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["eval", "--model", "builtin:minilm", "--data", str(data), "--json", "-"]) == 0
    out = capsys.readouterr().out
    assert "gold labels all predicted:" in out and "predicted labels per text:" in out
    assert "predicted labels per text with no true label:" in out
    report = json.loads(out[out.index("{") :])
    # The same figures, counted from the offline model's own answers.
    preds = builtin_classifier.classify([r["text"] for r in ROWS], [r["all_labels"] for r in ROWS])
    gold = [set(r["true_labels"]) <= set(p.labels) for p, r in zip(preds, ROWS) if r["true_labels"]]
    assert report["gold_predicted_share"] == pytest.approx(sum(gold) / len(gold))
    assert report["mean_predicted_labels"] == pytest.approx(sum(len(p.labels) for p in preds) / len(ROWS))
    assert report["mean_predicted_labels_no_gold"] == pytest.approx(len(preds[3].labels))
    assert report["gold_predicted_share"] == 1.0  # three clear texts
