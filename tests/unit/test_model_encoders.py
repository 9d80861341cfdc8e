"""Other encoder families through `transformers.AutoModel`: tiny random DeBERTa-v2 and ModernBERT.

A tiny random encoder (saved with the MiniLM WordPiece tokenizer) is wrapped into a GLiClass
checkpoint by the reference package; our scores must equal the reference pipeline's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.models import _reference_builder, minilm_dir, reference_logits

from gliclass_core import Classifier

pytestmark = pytest.mark.reference

TINY = {
    "deberta-v2": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        relative_attention=True,
        position_buckets=32,
        pos_att_type=["p2c", "c2p"],
        max_position_embeddings=512,
        position_biased_input=False,
    ),
    "modernbert": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=101,
        eos_token_id=102,
        cls_token_id=101,
        sep_token_id=102,
    ),
}
TEXTS = ["One day I will see the world!", "The central bank raised interest rates again."]
LABELS = ["travel", "finance", "sport", "science fiction"]


def _tiny_encoder(kind: str, out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    config = AutoConfig.for_model(kind, vocab_size=len(tokenizer), **TINY[kind])
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.mark.parametrize("kind", sorted(TINY))
def test_encoder_family_parity(tmp_path: Path, kind: str) -> None:
    oracle = _reference_builder()
    if oracle is None:
        pytest.skip("the reference gliclass package (or ../shared/oracle) is not available")
    import torch

    encoder = _tiny_encoder(kind, tmp_path / "encoder")
    ckpt = tmp_path / "ckpt"
    with torch.no_grad():
        oracle.build(
            str(encoder), str(ckpt), dict(pooling_strategy="avg", scorer_type="simple", prompt_first=True)
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
