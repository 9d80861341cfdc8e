"""An item's decision settings: its explicit values, else its label set's, else the defaults.

Both edges (the gRPC conversion and the Kafka worker's routes) resolve a label set's defaults here,
so a setting means the same whichever way an item arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

from gliclass_core.config import LabelSet
from gliclass_core.types import ClassifyItem, LabelNode, LongText

# The settings of an item without a label set: a label set's defaults.
_NO_LABEL_SET = LabelSet(name="", labels=())


@dataclass(frozen=True)
class ItemSettings:
    """The decision settings of one item, with its label set's defaults applied."""

    threshold: float
    multi_label: bool
    top_k: int | None
    prompt: str | None
    long_text: LongText
    return_hierarchical: bool

    def item(
        self, text: str, labels: tuple[str, ...], label_tree: tuple[LabelNode, ...] | None = None
    ) -> ClassifyItem:
        """Return the item scoring `text` against `labels` with these settings."""
        return ClassifyItem(
            text=text,
            labels=labels,
            threshold=self.threshold,
            multi_label=self.multi_label,
            top_k=self.top_k,
            prompt=self.prompt,
            long_text=self.long_text,
            label_tree=label_tree,
            return_hierarchical=self.return_hierarchical,
        )


def item_settings(
    label_set: LabelSet | None,
    *,
    threshold: float | None = None,
    multi_label: bool | None = None,
    top_k: int | None = None,
    prompt: str | None = None,
    long_text: LongText | None = None,
    return_hierarchical: bool | None = None,
) -> ItemSettings:
    """Return each given value, else `label_set`'s, else the default (0.5, multi-label, no top-k,
    no prompt, truncate, flat scores: a label set's own defaults).

    None means "not given". An empty `prompt` is given: it asks for no prompt even where the label
    set has one.
    """
    base = label_set if label_set is not None else _NO_LABEL_SET
    return ItemSettings(
        threshold=base.threshold if threshold is None else threshold,
        multi_label=base.multi_label if multi_label is None else multi_label,
        top_k=base.top_k if top_k is None else top_k,
        prompt=base.prompt if prompt is None else (prompt or None),
        long_text=base.long_text if long_text is None else long_text,
        return_hierarchical=base.return_hierarchical if return_hierarchical is None else return_hierarchical,
    )
