"""The reference's post-hoc calibrator: a per-(text, label) inverse temperature (and bias) for each logit.

An MLP over [LN(text), LN(label), their product, their absolute difference, 6 logit statistics]
predicts beta in (0, beta_max) and, with `calibrator_use_bias`, a bias b; the calibrated logit is
beta * z + b. Weights load from the checkpoint's `calibrator.*` keys. Statistics are taken over the
real labels of each row only (`label_mask`), so they do not depend on the batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

NUM_LOGIT_FEATURES = 6


def logit_features(logits: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
    """(B, K, 6): z, |z|, z - max z, z - mean z, mean binary entropy, log(#labels); zero on padding."""
    mask = label_mask.bool()
    maskf = mask.to(logits.dtype)
    count = maskf.sum(dim=-1, keepdim=True).clamp_min(1.0)
    top = logits.masked_fill(~mask, float("-inf")).amax(dim=-1, keepdim=True)
    top = torch.where(mask.any(dim=-1, keepdim=True), top, torch.zeros_like(top))
    mean = (logits * maskf).sum(dim=-1, keepdim=True) / count
    probs = torch.sigmoid(logits)
    entropy = -(probs * F.logsigmoid(logits) + (1 - probs) * F.logsigmoid(-logits))
    mean_entropy = (entropy * maskf).sum(dim=-1, keepdim=True) / count
    feats = [
        logits,
        logits.abs(),
        logits - top,
        logits - mean,
        mean_entropy.expand_as(logits),
        count.log().expand_as(logits),
    ]
    return torch.stack(feats, dim=-1) * maskf.unsqueeze(-1)


class Calibrator(nn.Module):
    """Module names follow the checkpoint's `calibrator.*` keys (dropout slots are inference no-ops)."""

    def __init__(self, size: int, hidden: int, beta_max: float, use_bias: bool) -> None:
        super().__init__()
        self.beta_max = beta_max
        self.use_bias = use_bias
        self.text_norm = nn.LayerNorm(size)
        self.label_norm = nn.LayerNorm(size)
        self.mlp = nn.Sequential(
            nn.Linear(4 * size + NUM_LOGIT_FEATURES, hidden),
            nn.GELU(),
            nn.Identity(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Identity(),
            nn.Linear(hidden, 2 if use_bias else 1),
        )

    def forward(
        self, text: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, label_mask: torch.Tensor
    ) -> torch.Tensor:
        """Calibrated logits (B, K) from text (B, D), labels (B, K, D) and raw logits (B, K)."""
        dtype = self.text_norm.weight.dtype
        t = self.text_norm(text.to(dtype)).unsqueeze(1).expand_as(labels)
        lab = self.label_norm(labels.to(dtype))
        stats = logit_features(logits.float(), label_mask).to(dtype)
        out = self.mlp(torch.cat([t, lab, t * lab, (t - lab).abs(), stats], dim=-1)).float()
        beta = self.beta_max * torch.sigmoid(out[..., 0])
        bias = out[..., 1] if self.use_bias else torch.zeros_like(beta)
        mask = label_mask.bool()
        beta = beta.masked_fill(~mask, 1.0)
        bias = bias.masked_fill(~mask, 0.0)
        return (beta * logits.float() + bias).to(logits.dtype)
