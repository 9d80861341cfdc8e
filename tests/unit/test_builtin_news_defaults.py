"""The builtin's default decisions on news it was never fitted on: the gold label, about one label.

Multi-label at threshold 0.5 (the defaults) on single-topic news: the gold label is predicted for at
least 0.8 of the articles with at most 1.6 labels each, and the argmax (single-label) stays right.
Data: the news rows of data/builtin_eval/heldout.jsonl (both label phrasings) and
data/news_fewshot/test.jsonl; no constant of builtin:minilm was fitted on either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def rows_of(path: Path, **match: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


SETS = {
    "heldout news, bare labels": rows_of(
        ROOT / "data/builtin_eval/heldout.jsonl", set="news", phrasing="bare"
    ),
    "heldout news, descriptive labels": rows_of(
        ROOT / "data/builtin_eval/heldout.jsonl", set="news", phrasing="descriptive"
    ),
    "news_fewshot test": rows_of(ROOT / "data/news_fewshot/test.jsonl"),
}


@pytest.mark.parametrize("name", sorted(SETS))
def test_default_decisions_on_unseen_news(builtin_classifier: Any, name: str) -> None:
    rows = SETS[name]
    assert len(rows) >= 25 and all(len(r["true_labels"]) == 1 for r in rows)
    preds = builtin_classifier.classify([r["text"] for r in rows], [r["all_labels"] for r in rows])
    gold = [r["true_labels"][0] for r in rows]
    gold_share = sum(g in p.labels for g, p in zip(gold, preds)) / len(rows)
    mean_labels = sum(len(p.labels) for p in preds) / len(rows)
    top1 = sum(max(p.scores, key=p.scores.__getitem__) == g for g, p in zip(gold, preds)) / len(rows)
    assert gold_share >= 0.8 and mean_labels <= 1.6, (gold_share, mean_labels)
    assert top1 >= 0.85, top1
