"""Other encoder families through `transformers.AutoModel`: tiny random DeBERTa-v2 and ModernBERT.

A tiny random encoder (saved with the MiniLM WordPiece tokenizer) is wrapped into a GLiClass
checkpoint by the reference package; our scores must equal the reference pipeline's.
"""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.reference import reference_logits

from gliclass_core import Classifier

pytestmark = pytest.mark.reference

TEXTS = ["One day I will see the world!", "The central bank raised interest rates again."]
LABELS = ["travel", "finance", "sport", "science fiction"]


@pytest.mark.parametrize("kind", ["deberta-v2", "modernbert"])
def test_encoder_family_parity(reference_checkpoint, tiny_encoder_dir, kind: str) -> None:
    ckpt = reference_checkpoint(
        f"tiny-{kind}-avg", encoder=tiny_encoder_dir(kind), pooling_strategy="avg", prompt_first=True
    )
    ref = np.array(reference_logits(ckpt, TEXTS, LABELS, [{}])[0])
    clf = Classifier.from_pretrained(str(ckpt), device="cpu")
    assert clf.info.extra["encoder"] == kind
    ours = np.array([clf.forward(clf.prepare(item).passes)[0] for item in _items()])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    batched = clf.forward([p for item in _items() for p in clf.prepare(item).passes])
    np.testing.assert_allclose(np.array(batched), ours, rtol=1e-4, atol=2e-5)


def _items():
    from gliclass_core import ClassifyItem

    return [ClassifyItem(text, tuple(LABELS)) for text in TEXTS]
