"""Plain data passed between the core, the runtime and the edges. No torch, no protobuf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Example:
    """An in-context example: a text and the labels that are true for it."""

    text: str
    true_labels: tuple[str, ...]


LONG_TEXT_MODES = ("truncate", "chunk")


@dataclass(frozen=True)
class LongText:
    """What to do with a text longer than the model's maximum length.

    `"truncate"`: cut the text to fit (the result says `truncated`). `"chunk"`: the reference's
    long-document mode — the text is split into `text_chunk_size`-character chunks overlapping by
    `text_chunk_overlap` characters, the labels into groups of `labels_chunk_size`, every
    (chunk, group) is one pass, and each label's score is its maximum over the chunks.
    Defaults are the reference pipeline's.
    """

    mode: str = "truncate"
    text_chunk_size: int = 8192
    text_chunk_overlap: int = 256
    labels_chunk_size: int = 8


TRUNCATE = LongText()


@dataclass(frozen=True)
class LabelNode:
    """One node of a hierarchical label set: a group (with children) or a leaf label.

    `label` is a leaf's flattened name (`sports.football`), the name it is scored and reported under.
    """

    name: str
    children: tuple[LabelNode, ...] = ()
    label: str = ""


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
    long_text: LongText = TRUNCATE
    label_tree: tuple[LabelNode, ...] | None = None
    return_hierarchical: bool = False


@dataclass(frozen=True)
class Prediction:
    """The result for one item.

    `scores` holds every given label in the given order; `labels` the predicted ones, best first.
    `label_chunks` > 1 means the labels did not fit one pass and were scored in that many passes.
    `truncated` means the text was cut to fit the model's maximum length.
    `text_chunks` > 1 means the text was scored in that many chunks (`long_text` mode "chunk").
    `hierarchy` is set when the item asked for `return_hierarchical`: the scores nested like the
    item's label tree (`{"sentiment": {"positive": 0.9, ...}, ...}`), or `{label: score}` for flat labels.
    `uncalibrated_scores`: for a model with a calibrator, `scores` are calibrated (and decide
    `labels`); these are the backbone's own scores before calibration. None for other models.
    """

    scores: dict[str, float]
    labels: list[str]
    label_chunks: int = 1
    truncated: bool = False
    text_chunks: int = 1
    hierarchy: dict[str, Any] | None = None
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


@dataclass(frozen=True, eq=False)
class EncodedPass:
    """One row of a forward batch: token ids plus what the head needs to read the labels back.

    `input_ids` is a 1-D int64 array (GliZNet passes may carry a tuple). `payload` is
    model-specific (e.g. label ids for a bi-encoder); the runtime never looks inside.
    """

    input_ids: np.ndarray | tuple[int, ...]
    num_labels: int
    payload: Any = None

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class PreparedItem:
    """A validated, tokenized item: its passes and how to reassemble their logits."""

    item: ClassifyItem
    passes: tuple[EncodedPass, ...]
    truncated: bool = False
    # long_text "chunk": how many of `passes` belong to each text chunk, in order (empty otherwise).
    text_chunks: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False)
class ItemPlan:
    """A validated item and its label chunks (one pass each), before its text is tokenized.

    `prepared` is set when the model packs items its own way and was tokenized eagerly.
    """

    item: ClassifyItem
    chunks: tuple[tuple[str, ...], ...]
    prepared: PreparedItem | None = None

    @property
    def num_passes(self) -> int:
        return len(self.prepared.passes) if self.prepared is not None else len(self.chunks)
