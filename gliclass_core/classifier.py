"""The public model API: `Classifier.from_pretrained(...).classify(...)`.

Contract with the runtime (gliclass_core.runtime), which batches across callers:

    prepared = clf.prepare(item, index)        # validate + tokenize; CPU only, thread-safe, no forward pass
    prepared.passes                            # 1 pass normally; >1 when the labels need several chunks
    pass_.num_tokens                           # tokens this pass puts in a batch row (before padding)
    logits = replica.forward(passes)           # one padded forward pass over passes of ANY items/label sets
    clf.finish(prepared, [logits of its passes, in order]) -> Prediction

`forward` is the only method that touches the device; `prepare` and `finish` are cheap CPU work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gliclass_core.types import ClassifyItem, Example, ModelInfo, Prediction


@dataclass(frozen=True)
class EncodedPass:
    """One row of a forward batch: token ids plus what the head needs to read the labels back.

    `payload` is model-specific (e.g. label ids for a bi-encoder); the runtime never looks inside.
    """

    input_ids: tuple[int, ...]
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


class Classifier:
    """A loaded GLiClass-family model on one device (see module docstring for the batching contract)."""

    info: ModelInfo

    @classmethod
    def from_pretrained(
        cls, source: str, device: str = "auto", dtype: str | None = None, **kwargs: Any
    ) -> Classifier:
        """Load `builtin:minilm`, a local checkpoint directory, or a hub id."""
        raise NotImplementedError

    def replicate(self, device: str) -> Classifier:
        """Return a copy of this model on `device`, sharing tokenizer and label-prompt caches."""
        raise NotImplementedError

    def prepare(self, item: ClassifyItem, index: int | None = None) -> PreparedItem:
        """Validate and tokenize one item. Raises InvalidInput naming the field (and `index`)."""
        raise NotImplementedError

    def forward(self, passes: Sequence[EncodedPass]) -> list[np.ndarray]:
        """Run one padded forward pass; return float32 logits per pass (length `num_labels`)."""
        raise NotImplementedError

    def finish(self, prepared: PreparedItem, logits: Sequence[np.ndarray]) -> Prediction:
        """Turn the logits of an item's passes into scores and predicted labels."""
        raise NotImplementedError

    def classify(
        self,
        texts: str | Sequence[str],
        labels: Sequence[str] | Sequence[Sequence[str]],
        threshold: float = 0.5,
        multi_label: bool = True,
        prompt: str | Sequence[str | None] | None = None,
        examples: Sequence[Example] | None = None,
        top_k: int | None = None,
        batch_size: int = 32,
    ) -> list[Prediction]:
        """Classify texts offline (length-sorted batches, input order restored)."""
        raise NotImplementedError
