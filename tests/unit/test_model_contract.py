"""Both model families implement the one contract the runtime and the edges call (`gliclass_core.Model`)."""

from __future__ import annotations

from pathlib import Path

from gliclass_core import Classifier, ClassifyItem, Model
from gliclass_core.gliznet_classifier import GliZNetClassifier

GLIZNET = Path(__file__).parents[1] / "data" / "gliznet_authors" / "cosine-mean"


def _serves_one_item(model: Model) -> None:
    item = ClassifyItem(text="The striker scored twice", labels=("sport", "finance"))
    (prepared,) = model.encode([model.plan(item, 0)])
    logits = model.forward(list(prepared.passes))
    (pred,) = model.finish_many([prepared], [logits])
    assert pred == model.finish(prepared, logits)
    assert isinstance(model.replicate("cpu"), type(model))


def test_from_pretrained_gives_the_contract_for_either_family(builtin_classifier) -> None:
    gliznet = Classifier.from_pretrained(str(GLIZNET), device="cpu")
    assert isinstance(gliznet, GliZNetClassifier) and isinstance(gliznet, Model)
    assert not isinstance(gliznet, Classifier)
    assert isinstance(builtin_classifier, Classifier) and isinstance(builtin_classifier, Model)
    for model in (gliznet, builtin_classifier):
        _serves_one_item(model)
