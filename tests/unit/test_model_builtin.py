"""The builtin offline model loads, classifies, and materialises a real checkpoint directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gliclass_core import ClassifyItem

HELDOUT = Path(__file__).parents[2] / "data" / "builtin_eval" / "heldout.jsonl"


def test_builtin_is_a_real_checkpoint(builtin_classifier, gliclass_cache: Path) -> None:
    dirs = [p for p in gliclass_cache.iterdir() if p.name.startswith("builtin-minilm")]
    assert len(dirs) == 1
    config = json.loads((dirs[0] / "config.json").read_text())
    assert config["architecture_type"] == "bi-encoder"
    assert (dirs[0] / "model.safetensors").is_file()
    assert builtin_classifier.info.architecture == "bi-encoder"


def test_builtin_prepare_forward_finish(builtin_classifier) -> None:
    item = ClassifyItem(
        text="I was charged twice for my subscription", labels=("billing", "sports", "weather")
    )
    prepared = builtin_classifier.prepare(item, 0)
    assert len(prepared.passes) == 1
    logits = builtin_classifier.forward(prepared.passes)
    pred = builtin_classifier.finish(prepared, logits)
    assert list(pred.scores) == ["billing", "sports", "weather"]
    assert pred.labels[0] == "billing"
    assert pred.scores["billing"] > 0.5 > pred.scores["sports"]


def test_builtin_classifies_the_labelled_set_well_above_chance(builtin_classifier) -> None:
    rows = [json.loads(line) for line in (Path(__file__).parents[1] / "data" / "topics.jsonl").open()]
    labels = rows[0]["all_labels"]
    assert len(rows) >= 100 and len(labels) >= 5
    preds = builtin_classifier.classify([r["text"] for r in rows], labels, batch_size=64)
    top1 = [max(p.scores, key=p.scores.__getitem__) for p in preds]
    accuracy = sum(t in r["true_labels"] for t, r in zip(top1, rows)) / len(rows)
    assert accuracy >= 0.7  # chance is 1/8; measured 0.90
    # Multi-label at threshold 0.5 is calibrated: a true label passes far more often than a false one.
    tp = sum(lab in p.labels for p, r in zip(preds, rows) for lab in r["true_labels"])
    fp = sum(lab not in r["true_labels"] for p, r in zip(preds, rows) for lab in p.labels)
    assert tp / len(rows) >= 0.5
    assert fp / (len(rows) * (len(labels) - 1)) <= 0.05


MIXED = ["sport", "politics", "business", "technology", "positive", "negative", "shipping", "complaint"]


@pytest.mark.parametrize(
    ("text", "gold"),
    [
        ("The striker scored twice as United beat City 3-1 in the derby.", "sport"),
        ("Shares in the retailer fell 8% after profits missed forecasts.", "business"),
        ("I love this product, it works perfectly!", "positive"),
        ("My parcel never arrived and the tracking page has not changed for a week.", "shipping"),
    ],
)
def test_default_multi_label_predicts_the_obvious_label(builtin_classifier, text: str, gold: str) -> None:
    pred = builtin_classifier.classify(text, MIXED)[0]  # the defaults: multi-label, threshold 0.5
    assert gold in pred.labels
    assert len(pred.labels) <= 2  # not a flood of labels


def test_default_answers_on_the_held_out_split(builtin_classifier) -> None:
    """The issue's targets on data/builtin_eval/heldout.jsonl (no constant was fitted on it)."""
    rows = [json.loads(line) for line in HELDOUT.open()]
    rows = [r for r in rows if len(r["true_labels"]) == 1]
    assert len(rows) >= 300 and len({r["set"] for r in rows}) >= 6
    preds = builtin_classifier.classify([r["text"] for r in rows], [r["all_labels"] for r in rows])
    gold_share = sum(r["true_labels"][0] in p.labels for p, r in zip(preds, rows)) / len(rows)
    mean_labels = sum(len(p.labels) for p in preds) / len(rows)
    assert gold_share >= 0.8 and mean_labels <= 1.5


def test_a_clearly_better_label_wins_where_a_lone_cosine_would_not(builtin_classifier) -> None:
    # Long texts have low cosines to every short label; the label that clearly beats the others passes.
    article = next(json.loads(line) for line in HELDOUT.open() if '"set": "news"' in line)
    assert len(article["text"]) > 300
    pred = builtin_classifier.classify(article["text"], article["all_labels"])[0]
    assert article["true_labels"][0] in pred.labels


def test_the_cached_checkpoint_is_versioned_and_rebuilt(tmp_path: Path, monkeypatch) -> None:
    from gliclass_core import builtin

    monkeypatch.setenv("GLICLASS_CACHE", str(tmp_path))
    old = tmp_path / "builtin-minilm-v1-s27.3-b-5.88"  # what version 1 left in a user's cache
    old.mkdir()
    (old / "config.json").write_text("{}")
    (old / "model.safetensors").write_bytes(b"")
    path = builtin.materialize("minilm")
    assert path != old and f"v{builtin.VERSION}" in path.name
    config = json.loads((path / "config.json").read_text())
    assert config["relative_scoring"] == {
        "margin_weight": builtin.MARGIN_WEIGHT,
        "lone_label_logit": builtin.LONE_LABEL_LOGIT,
    }
    assert config["logit_bias"] == builtin.LOGIT_BIAS
    # A half-written directory (no weights) is rebuilt, and a complete one is reused as it is.
    (path / "model.safetensors").unlink()
    assert builtin.materialize("minilm") == path and (path / "model.safetensors").is_file()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert builtin.materialize("minilm") == path and (path / "model.safetensors").stat().st_mtime_ns == stamp
