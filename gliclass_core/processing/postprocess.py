"""Turn an item's logits into label scores and predicted labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def scores_from_logits(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Sigmoid per label (multi-label) or softmax over the labels, the last axis (single-label).

    Takes one item's logits (K,) or a matrix (items, K), row by row in one vectorised step.
    """
    x = np.asarray(logits).astype(np.float64)
    if multi_label:
        return np.asarray(1.0 / (1.0 + np.exp(-x)))
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def decide(
    labels: Sequence[str],
    scores: np.ndarray,
    multi_label: bool,
    threshold: float | Mapping[str, float],
    top_k: int | None,
) -> list[str]:
    """Predicted labels, best first: above threshold (multi-label) or the argmax (single-label)."""
    order = sorted(range(len(labels)), key=lambda i: (-scores[i], i))
    if not multi_label:
        return [labels[order[0]]]
    if isinstance(threshold, Mapping):
        picked = [labels[i] for i in order if scores[i] >= threshold.get(labels[i], 0.5)]
    else:
        picked = [labels[i] for i in order if scores[i] >= threshold]
    return picked[:top_k] if top_k is not None else picked


def decide_row(
    labels: Sequence[str],
    scores: Sequence[float],
    multi_label: bool,
    threshold: float | Mapping[str, float],
    top_k: int | None,
) -> list[str]:
    """`decide` on plain floats (no per-element numpy access): the same labels in the same order."""
    if not multi_label:
        best = max(range(len(labels)), key=lambda i: (scores[i], -i))
        return [labels[best]]
    if isinstance(threshold, Mapping):
        picked = [i for i in range(len(labels)) if scores[i] >= threshold.get(labels[i], 0.5)]
    else:
        picked = [i for i, s in enumerate(scores) if s >= threshold]
    picked.sort(key=lambda i: (-scores[i], i))
    out = [labels[i] for i in picked]
    return out[:top_k] if top_k is not None else out
