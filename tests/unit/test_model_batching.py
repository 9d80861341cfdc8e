"""Batched forward passes equal unbatched ones, whatever else the batch holds (pad-masked pooling)."""

from __future__ import annotations

import numpy as np
import pytest

from gliclass_core import Classifier, ClassifyItem, Example

ITEMS = [
    ClassifyItem("short", ("a", "b")),
    ClassifyItem(
        "A much longer text about the central bank, interest rates and the stock market " * 4,
        ("finance", "sport", "politics and government", "weather"),
    ),
    ClassifyItem("Our team won the championship.", ("sport",), prompt="Topic?"),
    ClassifyItem(
        "I love hiking in the mountains.",
        ("travel", "outdoor sports", "cooking"),
        examples=(Example("Pasta recipe", ("cooking",)),),
    ),
]

VARIANTS = {
    "uni-avg-average-hopfield": dict(
        pooling_strategy="avg", class_token_pooling="average", scorer_type="hopfield", prompt_first=False
    ),
    "uni-max-extract-weighted": dict(
        pooling_strategy="max", extract_text_features=True, scorer_type="weighted-dot", prompt_first=True
    ),
    "uni-rms-mlp-noembed": dict(pooling_strategy="rms", scorer_type="mlp", embed_class_token=False),
    "bi-avg": dict(architecture_type="bi-encoder", pooling_strategy="avg"),
    "fused-abs_avg": dict(
        architecture_type="bi-encoder-fused", pooling_strategy="abs_avg", normalize_features=True
    ),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_batched_equals_unbatched(own_checkpoint, name: str) -> None:
    clf = Classifier.from_pretrained(str(own_checkpoint(name, **VARIANTS[name])), device="cpu")
    prepared = [clf.prepare(item, i) for i, item in enumerate(ITEMS)]
    passes = [p for prep in prepared for p in prep.passes]
    alone = [clf.forward([p])[0] for p in passes]
    together = clf.forward(passes)
    reversed_ = clf.forward(passes[::-1])[::-1]
    spread = max(float(np.ptp(x)) for x in alone if x.size > 1)
    assert spread > 0.01  # the logits carry signal, so equality is meaningful
    for a, b, c in zip(alone, together, reversed_):
        assert a.shape == b.shape == c.shape
        np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(c, a, atol=2e-5, rtol=1e-5)
        assert np.abs(1 / (1 + np.exp(-a)) - 1 / (1 + np.exp(-b))).max() < 1e-5


def test_classify_batch_sizes_agree(own_checkpoint) -> None:
    clf = Classifier.from_pretrained(
        str(own_checkpoint("uni-avg-average-hopfield", **VARIANTS["uni-avg-average-hopfield"]))
    )
    texts = [item.text for item in ITEMS]
    labels = [list(item.labels) for item in ITEMS]
    one = clf.classify(texts, labels, batch_size=1)
    many = clf.classify(texts, labels, batch_size=8)
    for a, b in zip(one, many):
        assert list(a.scores) == list(b.scores)
        assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-5


def test_bi_encoder_label_vectors_are_cached(builtin_classifier) -> None:
    labels = ("cache probe label one", "cache probe label two")
    builtin_classifier.classify(["first text"], labels)
    hits = builtin_classifier.label_vectors.hits
    builtin_classifier.classify(["another text"], labels)
    assert builtin_classifier.label_vectors.hits >= hits + 2
