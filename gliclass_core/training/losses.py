"""Training losses: GLiClass focal loss and GliZNet's composite loss, both masked to real label slots.

Shapes: `logits`, `targets`, `mask` are (B, K); K is the longest label list in the batch and
`mask` is True on the slots that hold a real label. Targets may be soft (label -> score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def target_matrix(rows: Sequence[Sequence[float]], like: torch.Tensor) -> torch.Tensor:
    """Per-example target scores as a (B, K) tensor shaped, typed and placed like `like`, 0 in empty slots."""
    targets = torch.zeros_like(like)
    for r, row in enumerate(rows):
        targets[r, : len(row)] = torch.tensor(row, dtype=targets.dtype)
    return targets


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = 0.5,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Mean focal loss with logits over real label slots; alpha < 0 and gamma <= 0 switch each part off.

    loss = alpha_t * (1 - p_t)^gamma * BCE(logit, target), with p_t = p*y + (1-p)*(1-y) and
    alpha_t = alpha*y + (1-alpha)*(1-y). alpha=-1, gamma=-1 is plain BCE.
    """
    targets = targets.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if gamma > 0:
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = loss * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    valid = mask.to(loss.dtype)
    # Normalise by real slots only, so the loss does not shrink as padding grows.
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def positive_softmax_ce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each sample's real labels, averaged over its positives.

    Per sample: sum_k y_k * -log softmax(logits)_k / sum_k y_k (hard targets: the mean over positives).
    Samples without a positive are left out; the result is the mean over the remaining samples.
    """
    # A large finite fill (not -inf) keeps gradients finite even for a row without labels.
    masked = logits.masked_fill(~mask, torch.finfo(logits.dtype).min / 2)
    log_probs = torch.log_softmax(masked, dim=-1).masked_fill(~mask, 0.0)
    weights = targets.to(logits.dtype) * mask
    pos = weights.sum(-1)
    per_sample = -(weights * log_probs).sum(-1) / pos.clamp(min=1e-12)
    has_pos = pos > 0
    if not bool(has_pos.any()):
        return logits.sum() * 0.0
    return per_sample[has_pos].mean()


def label_repulsion(
    label_embeddings: torch.Tensor, mask: torch.Tensor, threshold: float = 0.3
) -> torch.Tensor:
    """Mean of relu(cos(l_i, l_j) - threshold) over pairs i < j of distinct labels within each sample."""
    normed = F.normalize(label_embeddings, dim=-1, eps=1e-8)
    cos = torch.einsum("bip,bjp->bij", normed, normed)
    k = cos.shape[-1]
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=cos.device), diagonal=1)
    pairs = upper & mask.unsqueeze(-1) & mask.unsqueeze(-2)
    if not bool(pairs.any()):
        return cos.sum() * 0.0
    return F.relu(cos[pairs] - threshold).mean()


def scaled_cosine_bce(
    cosine: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """BCE on cosine * scale (scale clamped to [0.1, 10]), mean over real label slots."""
    logits = cosine * scale.clamp(0.1, 10.0)
    return focal_loss(logits, targets, mask, alpha=-1, gamma=-1)


@dataclass(frozen=True)
class GliZNetLossParts:
    """The weighted total and its three parts (unweighted), for logging."""

    total: torch.Tensor
    ce: torch.Tensor
    repulsion: torch.Tensor
    bce: torch.Tensor


def gliznet_loss(
    logits: torch.Tensor,
    cosine: torch.Tensor,
    label_embeddings: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    bce_scale: torch.Tensor,
    ce_weight: float = 1.0,
    repulsion_weight: float = 0.1,
    bce_weight: float = 1.0,
    repulsion_threshold: float = 0.3,
) -> GliZNetLossParts:
    """GliZNet composite loss: positive-averaged softmax CE + label repulsion + scaled-cosine BCE."""
    ce = positive_softmax_ce(logits, targets, mask)
    rep = label_repulsion(label_embeddings, mask, repulsion_threshold)
    bce = scaled_cosine_bce(cosine, targets, mask, bce_scale)
    total = ce_weight * ce + repulsion_weight * rep + bce_weight * bce
    return GliZNetLossParts(total, ce, rep, bce)
