"""Plain data passed between the core, the runtime and the edges. No torch, no protobuf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """An in-context example: a text and the labels that are true for it."""

    text: str
    true_labels: tuple[str, ...]


@dataclass(frozen=True)
class ClassifyItem:
    """One text to score against one label list, with its decision settings.

    `threshold` is either one float for every label or a mapping label -> threshold
    (labels missing from the mapping use 0.5).
    """

    text: str
    labels: tuple[str, ...]
    threshold: float | Mapping[str, float] = 0.5
    multi_label: bool = True
    top_k: int | None = None
    prompt: str | None = None
    examples: tuple[Example, ...] = ()


@dataclass(frozen=True)
class Prediction:
    """The result for one item.

    `scores` holds every given label in the given order; `labels` the predicted ones, best first.
    `label_chunks` > 1 means the labels did not fit one pass and were scored in that many passes.
    `truncated` means the text was cut to fit the model's maximum length.
    `uncalibrated_scores`: for a model with a calibrator, `scores` are calibrated (and decide
    `labels`); these are the backbone's own scores before calibration. None for other models.
    """

    scores: dict[str, float]
    labels: list[str]
    label_chunks: int = 1
    truncated: bool = False
    uncalibrated_scores: dict[str, float] | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is, for GetModelInfo and logs."""

    model_id: str
    architecture: str
    device: str
    dtype: str
    max_length: int
    max_labels: int
    extra: dict[str, str] = field(default_factory=dict)
