"""GLiClass-family zero-shot classification: models, input packing, batching runtime, training."""

from __future__ import annotations

from gliclass_core.classifier import Classifier, EncodedPass, PreparedItem
from gliclass_core.types import ClassifyItem, Example, ModelInfo, Prediction

__all__ = [
    "Classifier",
    "ClassifyItem",
    "EncodedPass",
    "Example",
    "ModelInfo",
    "Prediction",
    "PreparedItem",
]
