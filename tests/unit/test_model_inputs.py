"""Bad input raises InvalidInput naming the problem; label chunking and many labels work end to end."""

from __future__ import annotations

import numpy as np
import pytest

from gliclass_core import Classifier, ClassifyItem, Example
from gliclass_core.errors import InvalidInput


@pytest.mark.parametrize(
    ("item", "field", "words"),
    [
        (ClassifyItem("text", ()), "labels", "no labels"),
        (ClassifyItem("text", ("a", "a")), "labels", "duplicate"),
        (ClassifyItem("text", ("a", " ")), "labels", "empty label"),
        (ClassifyItem("", ("a",)), "text", "empty"),
        (ClassifyItem("   ", ("a",)), "text", "empty"),
        (ClassifyItem(3, ("a",)), "text", "string"),  # type: ignore[arg-type]
        (ClassifyItem("text", "abc"), "labels", "list"),  # type: ignore[arg-type]
        (ClassifyItem("text", ("a", 5)), "labels", "not a string"),  # type: ignore[arg-type]
        (ClassifyItem("text", ("a",), threshold=1.5), "threshold", "[0, 1]"),
        (ClassifyItem("text", ("a",), threshold={"a": "x"}), "threshold", "[0, 1]"),  # type: ignore[dict-item]
        (ClassifyItem("text", ("a",), top_k=0), "top_k", "positive"),
        (ClassifyItem("text", ("a",), multi_label="yes"), "multi_label", "true or false"),  # type: ignore[arg-type]
        (ClassifyItem("text", ("a",), prompt=7), "prompt", "string"),  # type: ignore[arg-type]
        (ClassifyItem("text <<LABEL>>", ("a",)), "text", "reserved marker"),
        (ClassifyItem("text", ("a",), examples=("x",)), "examples", "true_labels"),  # type: ignore[arg-type]
        (ClassifyItem("text", tuple(f"l{i}" for i in range(1001))), "labels", "at most 1000"),
    ],
)
def test_bad_items_raise_invalid_input(builtin_classifier, item, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        builtin_classifier.prepare(item, 7)
    assert info.value.field == field
    assert info.value.index == 7
    assert words in str(info.value)
    assert "item 7" in str(info.value)


def test_classify_argument_errors(builtin_classifier) -> None:
    with pytest.raises(InvalidInput, match="label lists for"):
        builtin_classifier.classify(["a", "b"], [["x"], ["y"], ["z"]])
    with pytest.raises(InvalidInput, match="prompts for"):
        builtin_classifier.classify(["a", "b"], ["x"], prompt=["p"])
    with pytest.raises(InvalidInput, match="texts"):
        builtin_classifier.classify(None, ["x"])  # type: ignore[arg-type]


def test_a_thousand_labels(builtin_classifier) -> None:
    labels = [f"topic {i}" for i in range(999)] + ["billing"]
    pred = builtin_classifier.classify("I was charged twice on my credit card", labels, top_k=3)[0]
    assert len(pred.scores) == 1000 and list(pred.scores) == labels
    assert len(pred.labels) <= 3


def test_per_text_labels_thresholds_and_single_label(builtin_classifier) -> None:
    preds = builtin_classifier.classify(
        ["My invoice is wrong", "The app crashes on start"],
        [["billing", "sports"], ["bug report", "cooking", "travel"]],
        threshold={"billing": 0.0, "sports": 1.0},
    )
    assert list(preds[0].scores) == ["billing", "sports"]
    assert list(preds[1].scores) == ["bug report", "cooking", "travel"]
    assert preds[0].labels == ["billing"]  # per-label thresholds: 0.0 keeps it, 1.0 rejects sports
    single = builtin_classifier.classify(
        "The app crashes on start", ["bug report", "cooking"], multi_label=False
    )[0]
    assert single.labels == ["bug report"]
    assert abs(sum(single.scores.values()) - 1.0) < 1e-6


def test_predicted_labels_are_best_first(builtin_classifier) -> None:
    pred = builtin_classifier.classify("x", ["a", "b", "c", "d"], threshold=0.0)[0]
    values = [pred.scores[label] for label in pred.labels]
    assert values == sorted(values, reverse=True) and len(values) == 4


def test_chunked_labels_match_unchunked_scores(own_checkpoint) -> None:
    """Uni-encoder: labels that do not fit are scored in several passes; the result says so."""
    path = own_checkpoint("uni-first-chunk", pooling_strategy="first")
    small = Classifier.from_pretrained(str(path), max_length=48)
    labels = [f"category {i}" for i in range(30)]
    pred = small.classify("a text about things", labels, examples=[Example("e", ("category 1",))])[0]
    assert pred.label_chunks > 1
    assert list(pred.scores) == labels
    assert all(0.0 <= s <= 1.0 for s in pred.scores.values())
    single = small.classify("a text about things", labels, multi_label=False)[0]
    assert abs(sum(single.scores.values()) - 1.0) < 1e-6
    assert single.label_chunks > 1


def test_long_text_is_truncated_and_flagged(own_checkpoint) -> None:
    path = own_checkpoint("uni-first-chunk", pooling_strategy="first")
    clf = Classifier.from_pretrained(str(path), max_length=10_000)
    assert clf.info.max_length == 512  # capped at max_position_embeddings
    pred = clf.classify("word " * 2000, ["alpha", "beta"])[0]
    assert pred.truncated and pred.label_chunks == 1
    prepared = clf.prepare(ClassifyItem("word " * 2000, ("alpha", "beta")))
    assert prepared.passes[0].num_tokens == 512
    logits = clf.forward(prepared.passes)[0]
    assert np.isfinite(logits).all()
