"""Turn `classify()` arguments into `ClassifyItem`s, and check the per-item options every model shares."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, cast

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.hierarchy import check_tree, split_labels
from gliclass_core.processing.long_text import check_long_text, long_text_options
from gliclass_core.types import TRUNCATE, ClassifyItem, Example, LongText

#: The labels of a `classify()` call: one list for every text, a list per text, or nested label
#: groups (a mapping such as `{"sports": ["football"]}`, or one per text) flattened with the separator.
LabelsArgument = Sequence[str] | Sequence[Sequence[str]] | Mapping[str, Any] | Sequence[Mapping[str, Any]]


def classify_items(
    texts: str | Sequence[str],
    labels: LabelsArgument,
    threshold: float | Mapping[str, float],
    multi_label: bool,
    prompt: str | Sequence[str | None] | None,
    examples: Sequence[Example] | None,
    top_k: int | None,
    *,
    long_text: str | LongText,
    text_chunk_size: int | None,
    text_chunk_overlap: int | None,
    labels_chunk_size: int | None,
    return_hierarchical: bool,
    label_separator: str,
) -> list[ClassifyItem]:
    """The items of one `classify()` call: nested labels flattened, long-text options validated."""
    options = long_text_options(long_text, text_chunk_size, text_chunk_overlap, labels_chunk_size)
    if not isinstance(return_hierarchical, bool):
        raise InvalidInput("must be true or false", field="return_hierarchical")
    trees: list[Any] = []
    flat_labels: Sequence[str] | Sequence[Sequence[str]]
    if isinstance(labels, Mapping):
        flat, tree = split_labels(labels, label_separator)
        flat_labels, trees = list(flat), [tree]
    elif isinstance(labels, Sequence) and labels and all(isinstance(x, Mapping) for x in labels):
        pairs = [split_labels(x, label_separator, index=i) for i, x in enumerate(labels)]
        flat_labels, trees = [list(f) for f, _ in pairs], [t for _, t in pairs]
    else:  # flat label lists; one mixing groups with labels is refused by build_items / validation
        flat_labels = cast(Sequence[str] | Sequence[Sequence[str]], labels)
    items = build_items(texts, flat_labels, threshold, multi_label, prompt, examples, top_k)
    if options is not TRUNCATE or trees or return_hierarchical:
        items = [
            dataclasses.replace(item, long_text=options, return_hierarchical=return_hierarchical,
                                label_tree=(trees[i] if len(trees) > 1 else trees[0]) if trees else None)
            for i, item in enumerate(items)
        ]  # fmt: skip
    return items


def build_items(
    texts: str | Sequence[str],
    labels: Sequence[str] | Sequence[Sequence[str]],
    threshold: float | Mapping[str, float] = 0.5,
    multi_label: bool = True,
    prompt: str | Sequence[str | None] | None = None,
    examples: Sequence[Example] | None = None,
    top_k: int | None = None,
) -> list[ClassifyItem]:
    """Normalise `classify()` arguments into one ClassifyItem per text."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence):
        raise InvalidInput("must be a string or a list of strings", field="texts")
    n = len(texts)
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise InvalidInput("must be a list of labels or one list per text", field="labels")
    per_text = len(labels) > 0 and all(not isinstance(x, str) for x in labels)
    if per_text and len(labels) != n:
        raise InvalidInput(f"{len(labels)} label lists for {n} texts", field="labels")
    if isinstance(prompt, str) or prompt is None:
        prompts: list[str | None] = [prompt] * n
    elif isinstance(prompt, Sequence):
        prompts = list(prompt)
        if len(prompts) != n:
            raise InvalidInput(f"{len(prompts)} prompts for {n} texts", field="prompt")
    else:
        raise InvalidInput("must be a string, a list with one per text, or None", field="prompt")
    if examples is not None and (isinstance(examples, str) or not isinstance(examples, Sequence)):
        raise InvalidInput("must be a list of examples", field="examples")
    ex = tuple(examples or ())
    items = []
    for i, text in enumerate(texts):
        item_labels = labels[i] if per_text else labels
        if isinstance(item_labels, str) or not isinstance(item_labels, Sequence):
            raise InvalidInput("must be a list of strings", field="labels", index=i)
        label_tuple = tuple(cast(Sequence[str], item_labels))
        items.append(ClassifyItem(text=text, labels=label_tuple, threshold=threshold,
                                  multi_label=multi_label, top_k=top_k, prompt=prompts[i],
                                  examples=ex))  # fmt: skip
    return items


def check_item_options(item: ClassifyItem, index: int | None) -> None:
    """Check the long-text and hierarchical-label settings of a validated item."""
    check_long_text(item.long_text, index=index)
    check_tree(item, index)
