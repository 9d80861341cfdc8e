"""Label scorers: map a text vector (B, D) and label vectors (B, K, D) to logits (B, K).

Sub-module names follow the checkpoint's `model.scorer.*` keys so weights load by name.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear/ReLU stack with the layer indices the checkpoint uses (0, 2, 4, ...)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
    return nn.Sequential(*layers)


class DotScorer(nn.Module):
    """Dot product of the text vector with each label vector."""

    def forward(self, text: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,bkd->bk", text, labels)


class WeightedDotScorer(nn.Module):
    """MLP over [text_a; label_a; text_b * label_b] where a/b are halves of a 2D projection."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.proj_text = nn.Linear(hidden, hidden * 2)
        self.proj_label = nn.Linear(hidden, hidden * 2)
        # Index 1 is the (inference no-op) dropout slot of the checkpoint's layout.
        self.out_mlp = nn.Sequential(
            nn.Linear(hidden * 3, hidden * 4), nn.Identity(), nn.ReLU(), nn.Linear(hidden * 4, 1)
        )
        self.hidden = hidden

    def forward(self, text: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
        b, k, d = labels.shape
        t = self.proj_text(text).view(b, 1, 2, d).expand(b, k, 2, d)
        lab = self.proj_label(labels).view(b, k, 2, d)
        feats = torch.cat([t[:, :, 0], lab[:, :, 0], t[:, :, 1] * lab[:, :, 1]], dim=-1)
        return self.out_mlp(feats).squeeze(-1)


class MLPScorer(nn.Module):
    """MLP over the concatenation [text; label]."""

    def __init__(self, hidden: int, mlp_hidden: int = 256) -> None:
        super().__init__()
        self.mlp = _mlp([hidden * 2, mlp_hidden, mlp_hidden // 2, 1])

    def forward(self, text: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
        expanded = text.unsqueeze(1).expand_as(labels)
        return self.mlp(torch.cat([expanded, labels], dim=-1)).squeeze(-1)


class HopfieldScorer(nn.Module):
    """One Hopfield update of the label vectors towards the text, then an MLP per label.

    The attention softmax runs over the labels of a row, so padded label slots are masked out
    (the reference leaves them in; at batch size 1 it has none).
    """

    def __init__(self, hidden: int, mlp_hidden: int = 256, beta: float = 4.0) -> None:
        super().__init__()
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, hidden, bias=False)
        self.v_proj = nn.Linear(hidden, hidden, bias=False)
        self.mlp = _mlp([hidden, mlp_hidden, mlp_hidden // 2, 1])
        self.beta = beta

    def forward(self, text: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
        query = self.q_proj(labels)
        key = self.k_proj(text)
        value = self.v_proj(text)
        energy = torch.einsum("bkd,bd->bk", query, key) * self.beta
        energy = energy.masked_fill(~label_mask, float("-inf"))
        weights = torch.softmax(energy, dim=1).nan_to_num(0.0)
        updated = labels + weights.unsqueeze(-1) * value.unsqueeze(1)
        return self.mlp(updated).squeeze(-1)


class CrossAttnScorer(nn.Module):
    """Labels attend over the text's token states, then an MLP over [context; label].

    Queries come from the LayerNorm'd labels, keys from the LayerNorm'd tokens, values from the raw
    tokens; `text_mask` (B, S) keeps padding (and, with extract_text_features, the label prompt) out.
    """

    def __init__(self, hidden: int, num_heads: int = 16, mlp_hidden: int = 1024) -> None:
        super().__init__()
        if hidden % num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by scorer_num_heads {num_heads}")
        self.num_heads = num_heads
        self.q_norm = nn.LayerNorm(hidden)
        self.kv_norm = nn.LayerNorm(hidden)
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.score_mlp = nn.Sequential(
            nn.Linear(hidden * 2, mlp_hidden),
            nn.GELU(),
            nn.Linear(mlp_hidden, mlp_hidden // 2),
            nn.GELU(),
            nn.Linear(mlp_hidden // 2, 1),
        )

    def forward(
        self, tokens: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        b, k, d = labels.shape
        heads = self.num_heads

        def split(x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, H, N, D/H)
            return x.view(b, x.shape[1], heads, d // heads).transpose(1, 2)

        q = split(self.q(self.q_norm(labels)))
        key = split(self.k(self.kv_norm(tokens)))
        value = split(self.v(tokens))
        mask = text_mask.bool()[:, None, None, :]
        context = nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=mask)
        context = self.norm(self.out(context.transpose(1, 2).reshape(b, k, d)))
        return self.score_mlp(torch.cat([context, labels], dim=-1)).squeeze(-1)


def build_scorer(kind: str, hidden: int, num_heads: int = 16, mlp_hidden: int = 1024) -> nn.Module:
    """Construct the scorer named in the config."""
    if kind == "simple":
        return DotScorer()
    if kind == "weighted-dot":
        return WeightedDotScorer(hidden)
    if kind == "mlp":
        return MLPScorer(hidden)
    if kind == "hopfield":
        return HopfieldScorer(hidden)
    if kind == "cross-attn":
        return CrossAttnScorer(hidden, num_heads, mlp_hidden)
    raise ValueError(f"unknown scorer {kind!r}")
