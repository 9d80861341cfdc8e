"""Reassemble the logits of an item's passes into its `Prediction` (every model's `finish`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from gliclass_core.processing.hierarchy import hierarchy_of
from gliclass_core.processing.long_text import chunked_scores
from gliclass_core.processing.postprocess import decide, decide_row, scores_from_logits
from gliclass_core.processing.relative import RelativeScoring
from gliclass_core.types import Prediction, PreparedItem


def finish(
    prepared: PreparedItem, logits: Sequence[np.ndarray], relative: RelativeScoring | None = None
) -> Prediction:
    """Turn the logits of an item's passes into scores and predicted labels.

    `relative` is the checkpoint's relative scoring (logits relative to the item's other labels), if any.
    """
    item = prepared.item
    if len(logits) != len(prepared.passes):
        raise ValueError(f"expected logits for {len(prepared.passes)} passes, got {len(logits)}")
    # A calibrated model's passes carry (2, K): calibrated logits, then the raw ones.
    rows = [np.asarray(x, dtype=np.float32).reshape(-1, np.shape(x)[-1]) for x in logits]
    calibrated = bool(rows) and all(r.shape[0] == 2 for r in rows)
    labels = tuple(item.labels)
    text_chunks = prepared.text_chunks or (len(prepared.passes),)
    total = sum(r.shape[1] for r in rows)
    if total != len(labels) * len(text_chunks):
        raise ValueError(f"expected {len(labels) * len(text_chunks)} logits, got {total}")
    transform = relative.apply if relative is not None else None
    scores = item_scores(prepared, [r[0] for r in rows], transform)
    predicted = decide(labels, scores, item.multi_label, item.threshold, item.top_k)
    by_label = {label: float(s) for label, s in zip(labels, scores)}
    hierarchy = hierarchy_of(item.label_tree, by_label) if item.return_hierarchical else None
    uncalibrated = None
    if calibrated:
        raw = item_scores(prepared, [r[1] for r in rows], None)
        uncalibrated = {label: float(s) for label, s in zip(labels, raw)}
    return Prediction(
        scores=by_label,
        labels=predicted,
        label_chunks=max(text_chunks),
        truncated=prepared.truncated,
        text_chunks=len(text_chunks),
        hierarchy=hierarchy,
        uncalibrated_scores=uncalibrated,
    )


def item_scores(
    prepared: PreparedItem,
    logits: Sequence[np.ndarray],
    transform: Callable[[np.ndarray], np.ndarray] | None,
) -> np.ndarray:
    """Scores over an item's labels from its passes' 1-D logits (max over text chunks if chunked)."""
    multi_label = prepared.item.multi_label
    if prepared.text_chunks:
        return chunked_scores(prepared.text_chunks, logits, multi_label, transform)
    flat = np.concatenate(logits)
    if transform is not None:
        flat = transform(flat)
    return scores_from_logits(flat, multi_label)


def finish_many(
    prepared: Sequence[PreparedItem],
    logits: Sequence[Sequence[np.ndarray]],
    relative: RelativeScoring | None = None,
) -> list[Prediction | Exception]:
    """`finish` for many items: one vectorised sigmoid/softmax per label count and mode.

    Returns a Prediction per item, or the exception `finish` would have raised for it.
    """
    out: list[Prediction | Exception | None] = [None] * len(prepared)
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, (prep, item_logits) in enumerate(zip(prepared, logits)):
        single = len(prep.passes) == 1 and len(item_logits) == 1 and not prep.text_chunks
        plain = single and np.ndim(item_logits[0]) == 1  # not a calibrated (2, K) pass
        if plain and len(item_logits[0]) == len(prep.item.labels) and not prep.item.return_hierarchical:
            groups.setdefault((len(prep.item.labels), prep.item.multi_label), []).append(i)
        else:
            try:
                out[i] = finish(prep, item_logits, relative)
            except Exception as exc:
                out[i] = exc
    for (_, multi_label), members in groups.items():
        matrix = np.stack([np.asarray(logits[i][0], dtype=np.float32) for i in members])
        if relative is not None:
            matrix = np.stack([relative.apply(row) for row in matrix])
        for i, row in zip(members, scores_from_logits(matrix, multi_label).tolist()):
            prep = prepared[i]
            item = prep.item
            labels = tuple(item.labels)
            out[i] = Prediction(
                scores=dict(zip(labels, row)),
                labels=decide_row(labels, row, multi_label, item.threshold, item.top_k),
                label_chunks=1,
                truncated=prep.truncated,
            )
    return out  # type: ignore[return-value]
