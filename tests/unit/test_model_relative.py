"""The "relative_scoring" checkpoint option: honoured by the loader, rank-preserving, batch-independent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gliclass_core import Classifier, ClassifyItem
from gliclass_core.errors import CheckpointError
from gliclass_core.processing.relative import RelativeScoring

RELATIVE = {"margin_weight": 2.0, "lone_label_logit": 0.5}
ITEMS = [
    ClassifyItem("I was charged twice for my subscription", ("billing", "sport", "weather", "cooking")),
    ClassifyItem("The match went to extra time and penalties.", ("sport", "finance")),
    ClassifyItem("Storm warning for the coast tonight", ("weather",)),
    ClassifyItem(
        "A much longer text about interest rates and the central bank " * 5, ("finance", "sport", "food")
    ),
]
# Names are this file's own: the own_checkpoint factory caches by name for the whole session.
VARIANTS = {
    "relative-bi-avg": dict(architecture_type="bi-encoder", pooling_strategy="avg", normalize_features=True),
    "relative-uni-first": dict(pooling_strategy="first"),
}


def _logits(clf: Classifier, item: ClassifyItem) -> np.ndarray:
    prepared = clf.prepare(item, 0)
    return np.concatenate(clf.forward(prepared.passes))


def _expected(z: np.ndarray, m: float, lone: float) -> np.ndarray:
    if z.size == 1:
        return z + m * (z - lone)
    best_other = np.array([np.max(np.delete(z, i)) for i in range(z.size)])
    return z + m * (z - best_other)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_loader_honours_relative_scoring(own_checkpoint, name: str) -> None:
    plain = Classifier.from_pretrained(str(own_checkpoint(name, **VARIANTS[name])), device="cpu")
    rel = Classifier.from_pretrained(
        str(own_checkpoint(f"{name}-on", **VARIANTS[name], relative_scoring=RELATIVE)), device="cpu"
    )
    assert plain.relative is None and rel.relative == RelativeScoring(2.0, 0.5)
    for item in ITEMS:
        z = _logits(plain, item).astype(np.float64)
        np.testing.assert_allclose(_logits(rel, item), z, rtol=1e-5, atol=1e-5)  # same weights
        got = rel.finish(rel.prepare(item, 0), [_logits(rel, item)])
        want = 1 / (1 + np.exp(-_expected(z, 2.0, 0.5)))
        np.testing.assert_allclose([got.scores[lbl] for lbl in item.labels], want, rtol=1e-4, atol=1e-5)
        # Ranks are kept, so single-label answers are the plain model's.
        argmax = [c.classify(item.text, list(item.labels), multi_label=False)[0].labels for c in (rel, plain)]
        assert argmax[0] == argmax[1]


def test_a_lone_label_is_compared_with_the_configured_logit(own_checkpoint) -> None:
    path = own_checkpoint("relative-bi-avg-on", **VARIANTS["relative-bi-avg"], relative_scoring=RELATIVE)
    clf = Classifier.from_pretrained(str(path), device="cpu")
    item = ClassifyItem("Storm warning for the coast tonight", ("weather",))
    z = float(_logits(clf, item)[0])
    score = clf.finish(clf.prepare(item, 0), [_logits(clf, item)]).scores["weather"]
    assert score == pytest.approx(1 / (1 + np.exp(-(z + 2.0 * (z - 0.5)))), rel=1e-5)


def test_batched_equals_unbatched_with_relative_scoring(builtin_classifier) -> None:
    assert builtin_classifier.relative is not None
    texts = [item.text for item in ITEMS]
    labels = [list(item.labels) for item in ITEMS]
    one = builtin_classifier.classify(texts, labels, batch_size=1)
    many = builtin_classifier.classify(texts[::-1], labels[::-1], batch_size=8)[::-1]
    for a, b in zip(one, many):
        assert a.labels == b.labels
        assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-5


def test_torch_and_numpy_maps_agree_with_padding() -> None:
    rel = RelativeScoring(1.5, -0.25)
    rows = [np.array([0.3, 2.0, -1.0]), np.array([1.0, 1.0]), np.array([0.7])]
    k = max(len(r) for r in rows)
    logits = torch.full((len(rows), k), 9.0)  # padding carries a large value that must not count
    mask = torch.zeros((len(rows), k), dtype=torch.bool)
    for i, r in enumerate(rows):
        logits[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    out = rel.apply_torch(logits, mask)
    for i, r in enumerate(rows):
        np.testing.assert_allclose(out[i, : len(r)].numpy(), rel.apply(r), rtol=1e-6)
        np.testing.assert_allclose(rel.apply(r), _expected(r, 1.5, -0.25), rtol=1e-6)
    assert (out[~mask] == 9.0).all()
    assert rel.apply(np.array([1.0, 1.0])).tolist() == [1.0, 1.0]  # a tie: neither beats the other


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("fast", "must be an object"),
        ({"margin_weight": -1.0, "lone_label_logit": 0.0}, ">= 0"),
        ({"margin_weight": "2", "lone_label_logit": 0.0}, "finite number"),
        ({"margin_weight": 1.0}, "lone_label_logit"),
        ({"margin_weight": 1.0, "lone_label_logit": 0.0, "extra": 1}, "unknown keys"),
        ({"margin_weight": float("nan"), "lone_label_logit": 0.0}, "finite number"),
        ({"margin_weight": 1.0, "lone_label_logit": float("-inf")}, "finite number"),
        ({"margin_weight": True, "lone_label_logit": 0.0}, "finite number"),
        ({"margin_weight": None, "lone_label_logit": 0.0}, "finite number"),
        ({"margin_weight": [1.0], "lone_label_logit": 0.0}, "finite number"),
        # Finite but huge: the logits would overflow to +-inf and single-label scores be NaN.
        ({"margin_weight": 1e300, "lone_label_logit": 0.0}, "within"),
        ({"margin_weight": 1.0, "lone_label_logit": -1e300}, "within"),
        ([1.0, 0.0], "must be an object"),
    ],
)
def test_bad_relative_options_are_refused_at_load(
    own_checkpoint, tmp_path: Path, value: object, words: str
) -> None:
    src = own_checkpoint("relative-bi-avg", **VARIANTS["relative-bi-avg"])
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in src.iterdir():
        (bad / f.name).symlink_to(f)
    (bad / "config.json").unlink()
    config = json.loads((src / "config.json").read_text())
    config["relative_scoring"] = value
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=words):
        Classifier.from_pretrained(str(bad), device="cpu")


def test_training_logits_match_inference(builtin_classifier) -> None:
    from gliclass_core.training.gliclass_trainable import GLiClassTrainable

    trainable = GLiClassTrainable.from_pretrained("builtin:minilm")
    assert trainable.relative == builtin_classifier.relative
    texts = [item.text for item in ITEMS]
    labels = [list(item.labels) for item in ITEMS]
    offline = builtin_classifier.classify(texts, labels)
    trained_view = trainable.predict(texts, labels)
    for a, b in zip(offline, trained_view):
        assert list(a.scores) == list(b)
        assert max(abs(a.scores[k] - b[k]) for k in b) < 1e-4
