"""The decoder-kv scorer: a small bidirectional encoder over the label block, then an MLP per label.

It reads the decoder's states of `label1<<LABEL>>label2<<LABEL>>...<<SEP>>`: a DeBERTa-v2 encoder
(no embeddings; `scorer_encoder_num_layers` layers, width the decoder's, heads width / 64), then the
text vector is the state at the block's last `<<SEP>>` and label k's vector the state at its
`<<LABEL>>`; each goes through its own Linear, is optionally L2-normalised, and an MLP over
[text; label] (hidden `scorer_mlp_hidden_size`, then half of it) gives the logit. Weight names match
the reference's `scorer.*` so checkpoints load as saved.
"""

from __future__ import annotations

import torch
from torch import nn

from gliclass_core.modeling.decoder_kv_config import DecoderKVConfig

_EPS = 1e-8


class DecoderKVScorer(nn.Module):
    """Score labels from the decoder's states of a label block (batch of blocks, right-padded)."""

    def __init__(self, cfg: DecoderKVConfig) -> None:
        super().__init__()
        from transformers import DebertaV2Config
        from transformers.models.deberta_v2.modeling_deberta_v2 import DebertaV2Encoder

        width = cfg.hidden_size
        encoder_config = DebertaV2Config(
            hidden_size=width,
            num_hidden_layers=cfg.scorer_layers,
            num_attention_heads=cfg.scorer_heads,
            intermediate_size=width * 4,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            max_relative_positions=512,
        )
        self.scorer_encoder = DebertaV2Encoder(encoder_config)
        self.text_projector = nn.Linear(width, width)
        self.label_projector = nn.Linear(width, width)
        hidden = cfg.scorer_mlp_hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(2 * width, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(),
            nn.Linear(hidden // 2, 1),
        )  # fmt: skip
        self.sep_id = cfg.sep_token_index
        self.label_id = cfg.class_token_index
        self.normalize = cfg.normalize_features

    def forward(self, states: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits (batch, max labels) for blocks `input_ids` (batch, L) with decoder `states` (batch, L, D).

        Label slots past a row's own labels hold garbage; callers slice each row to its label count.
        """
        encoded = self.scorer_encoder(states, attention_mask=mask, return_dict=True).last_hidden_state
        real = mask.bool()
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        last_sep = positions.masked_fill(~(input_ids.eq(self.sep_id) & real), -1).amax(dim=1)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        text = encoded[rows, last_sep.clamp_min(0)] * last_sep.ge(0).unsqueeze(-1)
        is_label = input_ids.eq(self.label_id) & real
        count = int(is_label.sum(dim=1).max().item()) if is_label.any() else 0
        labels = encoded.new_zeros(input_ids.shape[0], count, encoded.shape[-1])
        b, t = is_label.nonzero(as_tuple=True)
        rank = is_label.long().cumsum(dim=1) - 1
        labels[b, rank[b, t]] = encoded[b, t]
        text = self.text_projector(text)
        labels = self.label_projector(labels)
        if self.normalize:
            text = text / (text.norm(p=2, dim=-1, keepdim=True) + _EPS)
            labels = labels / (labels.norm(p=2, dim=-1, keepdim=True) + _EPS)
        pairs = torch.cat([text.unsqueeze(1).expand(-1, count, -1), labels], dim=-1)
        logits: torch.Tensor = self.mlp(pairs).squeeze(-1)
        return logits
