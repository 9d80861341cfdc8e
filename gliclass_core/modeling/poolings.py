"""Pad-masked poolings of token states into one vector per row.

The reference pools over every position of the padded batch, so its avg/max/sum/... depend on
what else is in the batch. Here `mask` marks the positions that belong to the row, which makes
the result batch-invariant and equal to the reference's at batch size 1 (where nothing is padded).
"""

from __future__ import annotations

import torch

from gliclass_core.modeling.config import POOLINGS


def pool(hidden: torch.Tensor, mask: torch.Tensor, strategy: str) -> torch.Tensor:
    """Pool `hidden` (B, S, D) over positions where `mask` (B, S) is true; rows are left-aligned."""
    if strategy not in POOLINGS:
        raise ValueError(f"unknown pooling {strategy!r}")
    if strategy == "first":
        return hidden[:, 0]
    lengths = mask.sum(dim=1)
    if strategy == "last":
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, (lengths - 1).clamp_min(0)]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    denom = lengths.clamp_min(1).unsqueeze(-1).to(hidden.dtype)
    if strategy == "avg":
        return (hidden * m).sum(dim=1) / denom
    if strategy == "sum":
        return (hidden * m).sum(dim=1)
    if strategy == "rms":
        return ((hidden * m).pow(2).sum(dim=1) / denom).sqrt()
    if strategy == "abs_avg":
        return (hidden * m).abs().sum(dim=1) / denom
    if strategy == "abs_max":
        return (hidden * m).abs().amax(dim=1)
    # max: padding must never win, so it is filled with the lowest value instead of zero.
    filled = hidden.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(hidden.dtype).min)
    return filled.amax(dim=1)
