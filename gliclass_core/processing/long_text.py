"""Long-document mode ("chunk"): text chunks with overlap, labels in groups, max over chunks.

Follows the reference's `ZeroShotClassificationWithChunkingPipeline` (gliclass 0.1.21):

- the text is cut into `text_chunk_size`-character chunks, each starting `text_chunk_overlap`
  characters before the previous one ended; a text no longer than one chunk stays whole;
- the labels are scored in groups of `labels_chunk_size`, one pass per (chunk, group), so a label
  attends only to the labels of its group;
- per chunk, the activation (sigmoid, or softmax over all labels) is applied to the concatenated
  logits of its groups; each label's score is its maximum over the chunks; single-label scores of
  a multi-chunk text are then divided by their sum.

Every (chunk, group) becomes an ordinary pass of the item, so the scheduler batches them with any
other traffic; `finish_chunked` reassembles them. A pass still longer than the model (a chunk with
more tokens than fit) is truncated as in "truncate" mode and the result says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.postprocess import scores_from_logits
from gliclass_core.processing.validation import has_content
from gliclass_core.types import LONG_TEXT_MODES, TRUNCATE, ClassifyItem, EncodedPass, LongText, PreparedItem

# Bound on the passes one item may become, so a tiny chunk size cannot queue millions of rows.
MAX_CHUNK_PASSES = 4096


def long_text_options(
    mode: str | LongText | None = None,
    text_chunk_size: int | None = None,
    text_chunk_overlap: int | None = None,
    labels_chunk_size: int | None = None,
    base: LongText = TRUNCATE,
    field: str = "long_text",
    index: int | None = None,
) -> LongText:
    """Build validated `LongText` options: `base` with the given values replacing its own."""
    if isinstance(mode, LongText):
        base, mode = mode, None
    changes: dict[str, Any] = {}
    if mode is not None:
        changes["mode"] = mode
    for key, value in (("text_chunk_size", text_chunk_size), ("text_chunk_overlap", text_chunk_overlap),
                       ("labels_chunk_size", labels_chunk_size)):  # fmt: skip
        if value is not None:
            changes[key] = value
    options = dataclasses.replace(base, **changes) if changes else base
    check_long_text(options, field, index)
    return options


def check_long_text(options: object, field: str = "long_text", index: int | None = None) -> None:
    """Raise InvalidInput unless `options` is a valid LongText."""
    if not isinstance(options, LongText):
        raise InvalidInput(f"expected 'truncate' or 'chunk', got {options!r}", field=field, index=index)
    if options.mode not in LONG_TEXT_MODES:
        raise InvalidInput(
            f"must be one of {', '.join(LONG_TEXT_MODES)}, got {options.mode!r}", field=field, index=index
        )
    for key in ("text_chunk_size", "labels_chunk_size"):
        value = getattr(options, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"must be a positive integer, got {value!r}", field=key, index=index)
    overlap = options.text_chunk_overlap
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise InvalidInput(f"must be a non-negative integer, got {overlap!r}", field="text_chunk_overlap",
                           index=index)  # fmt: skip
    if overlap >= options.text_chunk_size:
        # The reference loops forever here: a chunk would never advance past the previous one.
        raise InvalidInput(
            f"{overlap} must be smaller than text_chunk_size ({options.text_chunk_size})",
            field="text_chunk_overlap",
            index=index,
        )


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Split `text` into `size`-character chunks, each overlapping the previous by `overlap`."""
    if len(text) <= size:
        return [text]
    chunks = []
    start = 0
    while start < len(text):
        end = start + size
        chunks.append(text[start:end])
        if end >= len(text):
            break
        start = end - overlap
    return chunks


def label_groups(labels: Sequence[str], size: int) -> list[tuple[str, ...]]:
    """The labels in consecutive groups of at most `size`."""
    return [tuple(labels[i : i + size]) for i in range(0, len(labels), size)]


def prepare_chunked(
    prepare_one: Callable[[ClassifyItem, int | None], PreparedItem], item: ClassifyItem, index: int | None
) -> PreparedItem:
    """Prepare every (text chunk, label group) of an already validated item as passes of one item.

    `prepare_one` is the model's own `prepare` (called with "truncate" sub-items), so every
    architecture packs its passes as it always does.
    """
    options = item.long_text
    groups = label_groups(item.labels, options.labels_chunk_size)
    chunks = chunk_text(item.text, options.text_chunk_size, options.text_chunk_overlap)
    # A chunk of only whitespace or invisible characters carries nothing to classify (and is not
    # a valid text): skip it. The whole text has content (validated), so at least one chunk stays.
    chunks = [c for c in chunks if has_content(c)]
    if len(chunks) * len(groups) > MAX_CHUNK_PASSES:
        raise InvalidInput(
            f"{len(chunks)} text chunks x {len(groups)} label groups is more than {MAX_CHUNK_PASSES} "
            "passes; raise text_chunk_size or labels_chunk_size",
            field="long_text",
            index=index,
        )
    passes: list[EncodedPass] = []
    per_chunk: list[int] = []
    truncated = False
    for chunk in chunks:
        count = 0
        for group in groups:
            sub = dataclasses.replace(
                item, text=chunk, labels=group, long_text=TRUNCATE, threshold=0.5, top_k=None,
                label_tree=None, return_hierarchical=False,
            )  # fmt: skip
            prepared = prepare_one(sub, index)
            passes.extend(prepared.passes)
            count += len(prepared.passes)
            truncated = truncated or prepared.truncated
        per_chunk.append(count)
    return PreparedItem(item=item, passes=tuple(passes), truncated=truncated, text_chunks=tuple(per_chunk))


def chunked_scores(
    per_chunk: Sequence[int],
    logits: Sequence[np.ndarray],
    multi_label: bool,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Scores of a chunked item: activation per text chunk, max over chunks (normalised if single-label).

    `transform` maps one chunk's logits over all labels before the activation (the checkpoint's
    relative scoring, where it has one)."""
    rows = []
    pos = 0
    for count in per_chunk:
        parts = logits[pos : pos + count]
        flat = np.concatenate([np.asarray(x, dtype=np.float32).reshape(-1) for x in parts])
        if transform is not None:
            flat = transform(flat)
        rows.append(scores_from_logits(flat, multi_label))
        pos += count
    scores = np.max(np.stack(rows), axis=0)
    if not multi_label and len(rows) > 1:
        total = float(scores.sum())
        if total > 0:
            scores = scores / total
    return np.asarray(scores)
