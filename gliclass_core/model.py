"""The model contract: what the runtime, the edges and users call on a loaded model.

Contract with the runtime (gliclass_core.runtime), which batches across callers:

    plan = model.plan(item, index)               # validate + plan the passes, no tokenization (cheap)
    model.encode([plan, ...]) -> [PreparedItem]  # tokenize many items in one Rust batch call
    prepared = model.prepare(item, index)        # plan + encode of one item; CPU only, thread-safe
    prepared.passes                              # 1 pass normally; >1 when the labels need several chunks
    pass_.num_tokens                             # tokens this pass puts in a batch row (before padding)
    logits = model.forward(passes)               # one padded forward pass over passes of ANY items/label sets
    model.finish(prepared, [logits of its passes, in order]) -> Prediction
    model.finish_many([prepared, ...], [[logits], ...])       # the same, vectorised over a batch
    model.replicate(device)                      # a copy on another device, sharing tokenizer and caches

`forward` is the only method that touches the device; `plan`, `encode` and `finish` are cheap CPU
work. Implementations: `gliclass_core.classifier.Classifier` (GLiClass checkpoints, the builtin)
and `gliclass_core.gliznet_classifier.GliZNetClassifier`; `Classifier.from_pretrained` returns the
one the checkpoint needs. `classify` (offline, length-sorted batches) is built on the contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from gliclass_core.errors import InvalidInput
from gliclass_core.items import LabelsArgument, classify_items
from gliclass_core.processing.validation import MAX_LABELS
from gliclass_core.types import (
    ClassifyItem,
    EncodedPass,
    Example,
    ItemPlan,
    LongText,
    ModelInfo,
    Prediction,
    PreparedItem,
)


class Model(ABC):
    """A loaded zero-shot classifier on one device (see the module docstring for the contract)."""

    info: ModelInfo
    model_id: str
    device: str

    @abstractmethod
    def plan(self, item: ClassifyItem, index: int | None = None) -> ItemPlan:
        """Validate an item and plan its passes (cheap, thread-safe).

        Raises InvalidInput naming the field (and `index`). Everything that can reject an item is
        checked here, so `encode` of a plan does not fail on input.
        """

    @abstractmethod
    def encode(self, plans: Sequence[ItemPlan]) -> list[PreparedItem]:
        """Tokenize planned items (plans that carry `prepared` are returned as they are)."""

    @abstractmethod
    def forward(self, passes: Sequence[EncodedPass]) -> list[np.ndarray]:
        """Run one padded forward pass; return float32 logits per pass (length `num_labels`)."""

    @abstractmethod
    def finish(self, prepared: PreparedItem, logits: Sequence[np.ndarray]) -> Prediction:
        """Turn the logits of an item's passes into scores and predicted labels."""

    @abstractmethod
    def finish_many(
        self, prepared: Sequence[PreparedItem], logits: Sequence[Sequence[np.ndarray]]
    ) -> list[Prediction | Exception]:
        """`finish` for many items; a Prediction per item, or the exception `finish` would raise."""

    @abstractmethod
    def replicate(self, device: str) -> Model:
        """Return a copy of this model on `device`, sharing tokenizer and caches."""

    def prepare(self, item: ClassifyItem, index: int | None = None) -> PreparedItem:
        """Validate and tokenize one item. Raises InvalidInput naming the field (and `index`)."""
        return self.encode([self.plan(item, index)])[0]

    def prepare_many(self, items: Sequence[ClassifyItem], start: int = 0) -> list[PreparedItem]:
        """Validate and tokenize items (numbered from `start` in errors), texts in one batch call."""
        return self.encode([self.plan(item, start + i) for i, item in enumerate(items)])

    def classify(
        self,
        texts: str | Sequence[str],
        labels: LabelsArgument,
        threshold: float | Mapping[str, float] = 0.5,
        multi_label: bool = True,
        prompt: str | Sequence[str | None] | None = None,
        examples: Sequence[Example] | None = None,
        top_k: int | None = None,
        batch_size: int = 32,
        *,
        long_text: str | LongText = "truncate",
        text_chunk_size: int | None = None,
        text_chunk_overlap: int | None = None,
        labels_chunk_size: int | None = None,
        return_hierarchical: bool = False,
        label_separator: str = ".",
    ) -> list[Prediction]:
        """Classify texts offline (length-sorted batches, input order restored).

        `labels` may also be a nested mapping (or one per text), flattened with `label_separator`
        (`{"sports": ["football"]}` scores "sports.football"); `return_hierarchical` adds the scores
        nested the same way (`Prediction.hierarchy`). `long_text="chunk"` scores long texts in
        overlapping chunks (see `gliclass_core.processing.long_text`) instead of truncating them.
        """
        items = classify_items(
            texts, labels, threshold, multi_label, prompt, examples, top_k,
            long_text=long_text, text_chunk_size=text_chunk_size, text_chunk_overlap=text_chunk_overlap,
            labels_chunk_size=labels_chunk_size, return_hierarchical=return_hierarchical,
            label_separator=label_separator,
        )  # fmt: skip
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput("must be a positive integer", field="batch_size")
        plans = [self.plan(item, i) for i, item in enumerate(items)]
        # Items in text-length order, tokenized group by group on a helper thread (the Rust
        # tokenizer releases the GIL) while this thread runs the forward passes of earlier groups.
        order = sorted(range(len(plans)), key=lambda i: len(plans[i].item.text))
        size = max(4 * batch_size, 256)
        groups = [order[g : g + size] for g in range(0, len(order), size)]
        predictions: list[Prediction | Exception | None] = [None] * len(plans)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gliclass-tokenize") as pool:
            encoded = [pool.submit(self.encode, [plans[i] for i in group]) for group in groups]
            for group, future in zip(groups, encoded):
                prepared = future.result()
                for index, result in zip(group, self._forward_sorted(prepared, batch_size)):
                    predictions[index] = result
        for p in predictions:
            if isinstance(p, Exception):
                raise p
        return predictions  # type: ignore[return-value]

    def _forward_sorted(self, prepared: list[PreparedItem], batch_size: int) -> list[Prediction | Exception]:
        flat = [(i, j) for i, p in enumerate(prepared) for j in range(len(p.passes))]
        # Sorting by length keeps padding small; results go back to their item and pass slot.
        flat.sort(key=lambda ij: prepared[ij[0]].passes[ij[1]].num_tokens)
        out: list[list[np.ndarray | None]] = [[None] * len(p.passes) for p in prepared]
        for start in range(0, len(flat), batch_size):
            chunk = flat[start : start + batch_size]
            results = self.forward([prepared[i].passes[j] for i, j in chunk])
            for (i, j), logits in zip(chunk, results):
                out[i][j] = logits
        return self.finish_many(prepared, [[x for x in o if x is not None] for o in out])


def model_info(
    model_id: str, architecture: str, device: str, dtype: Any, max_length: int, encoder: Any, **extra: str
) -> ModelInfo:
    """Describe a loaded model for GetModelInfo and logs.

    `dtype` is a torch dtype or its name, `encoder` the encoder's model_type; `extra` adds entries.
    """
    return ModelInfo(
        model_id=model_id,
        architecture=architecture,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        max_length=max_length,
        max_labels=MAX_LABELS,
        extra={**extra, "encoder": str(encoder)},
    )
