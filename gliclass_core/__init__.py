"""GLiClass-family zero-shot classification: models, input packing, batching runtime, training."""

from __future__ import annotations

from gliclass_core.classifier import Classifier
from gliclass_core.model import Model
from gliclass_core.types import ClassifyItem, EncodedPass, Example, ModelInfo, Prediction, PreparedItem

__all__ = [
    "Classifier",
    "ClassifyItem",
    "EncodedPass",
    "Example",
    "Model",
    "ModelInfo",
    "Prediction",
    "PreparedItem",
]
