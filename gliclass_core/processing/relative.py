"""Relative scoring: a label's logit also counts how far it beats the other labels of the same call.

Our extension of the GLiClass config (the reference ignores it). With

    "relative_scoring": {"margin_weight": m, "lone_label_logit": r}

in config.json, an item's logits z (one per label, all passes joined) become

    z'_i = z_i + m * (z_i - max_{j != i} z_j)        (r stands in for the max when there is one label)

A bi-encoder scores each label alone, so a plain calibration cannot tell "the best of these
labels by far" from "as weak as the rest"; the margin term can. For m >= 0 the map keeps every
label's rank, so the argmax (single-label mode) is unchanged; it depends only on the item's own
logits, so batched and unbatched results are equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gliclass_core.errors import CheckpointError

CONFIG_KEY = "relative_scoring"
#: Bound on both options. Logits are of order 10; a finite but huge value overflows the float32
#: logits to +-inf, and softmax (single-label mode) turns those into NaN scores.
MAX_ABS_VALUE = 1000.0


@dataclass(frozen=True)
class RelativeScoring:
    """The margin weight and the logit a lone label is compared with."""

    margin_weight: float
    lone_label_logit: float

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Relative logits of one item (1-D array over its labels)."""
        x = np.asarray(logits, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return x.astype(np.float32)
        others = _best_other(x) if x.size > 1 else np.array([self.lone_label_logit])
        return (x + self.margin_weight * (x - others)).astype(np.float32)

    def apply_torch(self, logits: Any, mask: Any) -> Any:
        """The same map for a padded (B, K) tensor; `mask` (B, K) marks the real label slots."""
        import torch

        masked = logits.masked_fill(~mask, float("-inf"))
        k = min(2, logits.shape[1])
        top = masked.topk(k, dim=1)
        first = top.values[:, :1]
        second = top.values[:, 1:2] if k > 1 else torch.full_like(first, float("-inf"))
        lone = torch.full_like(first, self.lone_label_logit)
        second = torch.where(mask.sum(1, keepdim=True) > 1, second, lone)
        is_top = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0) == top.indices[:, :1]
        others = torch.where(is_top, second, first)
        out = logits + self.margin_weight * (logits - others)
        return torch.where(mask, out, logits)


def _best_other(x: np.ndarray) -> np.ndarray:
    """For each position, the largest value among the other positions (ties count as others)."""
    top = int(np.argmax(x))
    second = np.max(np.delete(x, top))
    out = np.full_like(x, x[top])
    out[top] = second
    return out


def from_config(raw: Mapping[str, Any]) -> RelativeScoring | None:
    """Read the option from a raw config.json dict; None when absent. Bad values: CheckpointError."""
    spec = raw.get(CONFIG_KEY)
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise CheckpointError(f"config.json: '{CONFIG_KEY}' must be an object")
    unknown = sorted(set(spec) - {"margin_weight", "lone_label_logit"})
    if unknown:
        raise CheckpointError(f"config.json: '{CONFIG_KEY}' has unknown keys {unknown}")
    values = {}
    for key in ("margin_weight", "lone_label_logit"):
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise CheckpointError(f"config.json: '{CONFIG_KEY}.{key}' must be a finite number")
        if abs(value) > MAX_ABS_VALUE:
            raise CheckpointError(f"config.json: '{CONFIG_KEY}.{key}' must be within +-{MAX_ABS_VALUE:g}")
        values[key] = float(value)
    if values["margin_weight"] < 0:
        raise CheckpointError(f"config.json: '{CONFIG_KEY}.margin_weight' must be >= 0 (keeps label ranks)")
    return RelativeScoring(values["margin_weight"], values["lone_label_logit"])
