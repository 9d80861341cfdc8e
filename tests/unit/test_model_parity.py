"""Parity with the reference `gliclass` pipeline at batch size 1, for every supported option.

Checkpoints are written by the reference package's own save_pretrained (tests/fixtures/models.py),
with head weights drawn large so a wrong pooling, scorer or token position shows up as a large
difference. Skipped when `gliclass` is not importable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fixtures.models import reference_logits

from gliclass_core import Classifier, ClassifyItem, Example

pytestmark = pytest.mark.reference

TEXTS = [
    "One day I will see the world!",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Our team won the championship in overtime last night, and the fans stormed the field to celebrate.",
]
# Multi-token labels of different lengths, so spans and marker positions matter.
LABELS = ["travel", "personal dreams", "sport", "science fiction", "politics", "finance and economy"]
PROMPT = "Classify the topic of this text:"
EXAMPLES = [
    {"text": "I love hiking in the Alps.", "labels": ["travel"]},
    {"text": "Bitcoin dropped 10% today.", "labels": ["finance and economy", "politics"]},
]

# name -> reference config overrides. Together they cover every pooling, both class-token
# poolings, embed_class_token, extract_text_features, normalize_features, every scorer and
# both prompt orders.
UNI: dict[str, dict[str, Any]] = {
    "first-simple": dict(pooling_strategy="first", scorer_type="simple", prompt_first=True),
    "last-weighted-extract": dict(
        pooling_strategy="last", scorer_type="weighted-dot", extract_text_features=True, prompt_first=False
    ),
    "avg-mlp-norm-average": dict(
        pooling_strategy="avg",
        scorer_type="mlp",
        normalize_features=True,
        class_token_pooling="average",
        extract_text_features=True,
        prompt_first=True,
    ),
    "max-hopfield": dict(pooling_strategy="max", scorer_type="hopfield", prompt_first=True),
    "sum-average": dict(
        pooling_strategy="sum", scorer_type="simple", class_token_pooling="average", prompt_first=False
    ),
    "rms-mlp-extract": dict(
        pooling_strategy="rms", scorer_type="mlp", extract_text_features=True, prompt_first=True
    ),
    "absmax-hopfield-noembed": dict(
        pooling_strategy="abs_max", scorer_type="hopfield", embed_class_token=False, prompt_first=False
    ),
    "absavg-all": dict(
        pooling_strategy="abs_avg",
        scorer_type="weighted-dot",
        class_token_pooling="average",
        embed_class_token=False,
        extract_text_features=True,
        normalize_features=True,
        prompt_first=False,
    ),
}
BI: dict[str, dict[str, Any]] = {
    "bi-first-norm": dict(architecture_type="bi-encoder", pooling_strategy="first", normalize_features=True),
    "bi-max-mlp": dict(architecture_type="bi-encoder", pooling_strategy="max", scorer_type="mlp"),
    "fused-first": dict(architecture_type="bi-encoder-fused", pooling_strategy="first", prompt_first=True),
    "fused-avg-norm": dict(
        architecture_type="bi-encoder-fused",
        pooling_strategy="avg",
        normalize_features=True,
        prompt_first=False,
    ),
}
# The reference pools bi-encoder labels over the padding of the whole label batch, so for poolings
# other than "first" its label vectors depend on the other labels; single-token labels have no padding.
BI_LABELS = {"first": LABELS}
SINGLE_TOKEN_LABELS = ["travel", "dreams", "sport", "science", "politics", "finance"]


CASES = [{}, {"prompt": PROMPT, "examples": EXAMPLES}]


def _ours(clf: Classifier, labels: list[str], case: dict[str, Any]) -> np.ndarray:
    examples = [Example(e["text"], tuple(e["labels"])) for e in case.get("examples", [])]
    rows = []
    for text in TEXTS:  # batch size 1, through the runtime contract
        item = ClassifyItem(text, tuple(labels), prompt=case.get("prompt"), examples=tuple(examples))
        prepared = clf.prepare(item)
        assert len(prepared.passes) == 1
        rows.append(clf.forward(prepared.passes)[0])
    return np.array(rows, dtype=np.float64)


def _check(directory, labels) -> None:
    clf = Classifier.from_pretrained(str(directory), device="cpu")
    ref_all = reference_logits(directory, TEXTS, labels, CASES)
    for case, ref_rows in zip(CASES, ref_all):
        ref = np.array(ref_rows, dtype=np.float64)
        ours = _ours(clf, labels, case)
        assert np.ptp(ref) > 0.01  # logits differ across labels and texts: not a constant model
        # Probabilities within 1e-5, and logits close too (probabilities alone saturate).
        assert np.abs(1 / (1 + np.exp(-ref)) - 1 / (1 + np.exp(-ours))).max() < 1e-5
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
        preds = clf.classify(TEXTS, labels, **_kw(case))
        got = np.array([[p.scores[label] for label in labels] for p in preds])
        assert np.abs(got - 1 / (1 + np.exp(-ref))).max() < 1e-5


def _kw(case: dict[str, Any]) -> dict[str, Any]:
    examples = [Example(e["text"], tuple(e["labels"])) for e in case.get("examples", [])]
    return {"prompt": case.get("prompt"), "examples": examples}


@pytest.mark.parametrize("name", sorted(UNI))
def test_uni_encoder_parity(reference_checkpoint, name: str) -> None:
    directory = reference_checkpoint(name, **UNI[name])
    _check(directory, LABELS)


@pytest.mark.parametrize("name", sorted(BI))
def test_bi_encoder_parity(reference_checkpoint, name: str) -> None:
    overrides = BI[name]
    labels = BI_LABELS.get(overrides["pooling_strategy"], SINGLE_TOKEN_LABELS)
    directory = reference_checkpoint(name, **overrides)
    _check(directory, labels)
