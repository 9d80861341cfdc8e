"""The BERT fast path (modeling/fast_bert.py) keeps the HF module's answers when its weights move."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertModel

from gliclass_core.modeling import fast_bert


def _tiny_bert() -> BertModel:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    return BertModel(cfg, add_pooling_layer=False).eval()


def _both(model: BertModel) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 64, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0  # padded rows: the packed path runs
    mask[1, 9:] = 0
    with torch.inference_mode():
        ours = fast_bert.bert_forward(model, ids, mask)
        theirs = model(input_ids=ids, attention_mask=mask)[0]
    real = mask.bool()
    return ours[real], theirs[real]


def test_fused_projection_follows_in_place_updates_and_conversions() -> None:
    """The fused query/key/value weight kept between calls is rebuilt after a training step or `.to()`."""
    model = _tiny_bert()
    ours, theirs = _both(model)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # what an optimizer step does: in place
        for layer in model.encoder.layer:
            layer.attention.self.key.weight.mul_(-1.5)
            layer.attention.self.value.bias.add_(0.3)
    moved, theirs_moved = _both(model)
    torch.testing.assert_close(moved, theirs_moved, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(moved, ours, atol=1e-3)
    model.to(torch.float64)
    wide, theirs_wide = _both(model)
    assert wide.dtype == torch.float64
    torch.testing.assert_close(wide, theirs_wide, atol=1e-9, rtol=1e-7)
    assert "_gliclass_fused_qkv" not in "".join(model.state_dict())  # never saved with the weights
