"""Labelled data in the GLiClass JSON-lines format and how it is batched for training.

One line: `{"text": "...", "all_labels": ["a", "b", ...], "true_labels": ["a"] | {"a": 0.9}}`.
`labels` is accepted as an alias of `all_labels` (the classify input format).

Weak supervision (the GLiClass article's): a line may instead describe a label,
`{"label": "sport", "descriptions": ["a match report", "a transfer rumour"]}`. Each description
becomes a training text with that label positive and every other label of the set negative; the
set is the line's own `all_labels`, or else every label that the file's description lines name.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gliclass_core.errors import InvalidInput

# Bound on one training file; a larger set should be streamed by an external pipeline.
MAX_EXAMPLES = 1_000_000
# Bound on one label's descriptions (each one is a training example).
MAX_DESCRIPTIONS = 10_000


@dataclass(frozen=True)
class LabelledExample:
    """One training/evaluation row: the text, its candidate labels and a target score per label."""

    text: str
    labels: tuple[str, ...]
    targets: tuple[float, ...]

    @property
    def true_labels(self) -> tuple[str, ...]:
        return tuple(lbl for lbl, t in zip(self.labels, self.targets) if t >= 0.5)


def parse_example(row: Mapping[str, Any], index: int | None = None) -> LabelledExample:
    """Validate one parsed JSON object. Raises InvalidInput naming the field and line."""
    if not isinstance(row, Mapping):
        raise InvalidInput("each line must be a JSON object", index=index)
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("must be a non-empty string", field="text", index=index)
    all_labels = row.get("all_labels", row.get("labels"))
    if not isinstance(all_labels, list) or not all_labels:
        raise InvalidInput("must be a non-empty list of strings", field="all_labels", index=index)
    if not all(isinstance(lbl, str) and lbl.strip() for lbl in all_labels):
        raise InvalidInput("every label must be a non-empty string", field="all_labels", index=index)
    if len(set(all_labels)) != len(all_labels):
        raise InvalidInput("labels must be unique", field="all_labels", index=index)
    true = row.get("true_labels", [])
    if isinstance(true, list):
        scores = {lbl: 1.0 for lbl in true}
    elif isinstance(true, Mapping):
        scores = {}
        for lbl, score in true.items():
            if not isinstance(score, int | float) or not 0.0 <= float(score) <= 1.0:
                raise InvalidInput(
                    f"score of {lbl!r} must be a number in [0, 1]", field="true_labels", index=index
                )
            scores[lbl] = float(score)
    else:
        raise InvalidInput(
            "must be a list of labels or an object {label: score}", field="true_labels", index=index
        )
    unknown = [lbl for lbl in scores if lbl not in all_labels]
    if unknown:
        raise InvalidInput(f"labels {unknown} are not in all_labels", field="true_labels", index=index)
    return LabelledExample(text, tuple(all_labels), tuple(scores.get(lbl, 0.0) for lbl in all_labels))


@dataclass(frozen=True)
class LabelDescriptions:
    """One weak-supervision line: short descriptions of one label's topic."""

    label: str
    descriptions: tuple[str, ...]
    all_labels: tuple[str, ...] | None = None


def is_description_line(row: Any) -> bool:
    """Whether a parsed line is a weak-supervision line (it has `descriptions` and no `text`)."""
    return isinstance(row, Mapping) and "descriptions" in row and "text" not in row


def parse_descriptions(row: Mapping[str, Any], index: int | None = None) -> LabelDescriptions:
    """Validate one `{"label", "descriptions", "all_labels"?}` line. Raises InvalidInput naming the field."""
    label = row.get("label")
    if not isinstance(label, str) or not label.strip():
        raise InvalidInput("must be a non-empty string", field="label", index=index)
    descriptions = row.get("descriptions")
    if not isinstance(descriptions, list) or not descriptions:
        raise InvalidInput("must be a non-empty list of strings", field="descriptions", index=index)
    if not all(isinstance(d, str) and d.strip() for d in descriptions):
        raise InvalidInput("every description must be a non-empty string", field="descriptions", index=index)
    if len(descriptions) > MAX_DESCRIPTIONS:
        raise InvalidInput(f"at most {MAX_DESCRIPTIONS} descriptions", field="descriptions", index=index)
    all_labels = row.get("all_labels")
    if all_labels is not None:
        parse_example({"text": descriptions[0], "all_labels": all_labels, "true_labels": [label]}, index)
        all_labels = tuple(all_labels)
    return LabelDescriptions(label, tuple(descriptions), all_labels)


def examples_from_descriptions(entries: Sequence[LabelDescriptions]) -> list[LabelledExample]:
    """Turn label descriptions into training examples: the description as the text, its label positive.

    Lines without `all_labels` share one label set: every label the lines name, in first-seen order.
    Raises InvalidInput when that set has a single label (nothing to tell apart).
    """
    shared = tuple(dict.fromkeys(e.label for e in entries if e.all_labels is None))
    if len(shared) == 1:
        raise InvalidInput(
            f"descriptions of one label only ({shared[0]!r}): describe at least two labels, "
            "or give each line its all_labels",
            field="descriptions",
        )
    out: list[LabelledExample] = []
    for entry in entries:
        labels = entry.all_labels or shared
        targets = tuple(1.0 if lbl == entry.label else 0.0 for lbl in labels)
        out.extend(LabelledExample(d, labels, targets) for d in entry.descriptions)
    return out


def read_jsonl(path: str | Path) -> list[LabelledExample]:
    """Read and validate a JSON-lines file; errors name the 1-based line number.

    Text lines and label-description lines (weak supervision) may be mixed; the descriptions'
    examples follow the text lines'.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"file not found: {p}", field="data")
    examples: list[LabelledExample] = []
    described: list[LabelDescriptions] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{p}:{lineno}: not valid JSON ({exc.msg})", field="data") from exc
            try:
                if is_description_line(row):
                    described.append(parse_descriptions(row))
                else:
                    examples.append(parse_example(row))
            except InvalidInput as exc:
                raise InvalidInput(f"{p}:{lineno}: {exc}", field=exc.field) from exc
            if len(examples) + len(described) > MAX_EXAMPLES:
                raise InvalidInput(f"{p}: more than {MAX_EXAMPLES} examples", field="data")
    if described:
        try:
            examples.extend(examples_from_descriptions(described))
        except InvalidInput as exc:
            raise InvalidInput(f"{p}: {exc}", field=exc.field) from exc
        if len(examples) > MAX_EXAMPLES:
            raise InvalidInput(f"{p}: more than {MAX_EXAMPLES} examples", field="data")
    if not examples:
        raise InvalidInput(f"{p}: no examples", field="data")
    return examples


def split(
    examples: Sequence[LabelledExample], eval_fraction: float, seed: int = 0
) -> tuple[list[LabelledExample], list[LabelledExample]]:
    """Shuffle and split off an evaluation fraction (at least one example when fraction > 0)."""
    rows = list(examples)
    random.Random(seed).shuffle(rows)
    if eval_fraction <= 0 or len(rows) < 2:
        return rows, []
    n_eval = max(1, round(len(rows) * eval_fraction))
    return rows[n_eval:], rows[:n_eval]


def batches(
    examples: Sequence[LabelledExample], batch_size: int, shuffle: bool, seed: int = 0
) -> Iterator[list[LabelledExample]]:
    """Yield batches; shuffled ones are drawn from length-sorted buckets to limit padding."""
    order = list(range(len(examples)))
    if shuffle:
        rng = random.Random(seed)
        rng.shuffle(order)
        # Sort within windows of 50 batches: near-equal lengths per batch, still a random epoch.
        window = batch_size * 50
        order = [
            i
            for start in range(0, len(order), window)
            for i in sorted(order[start : start + window], key=lambda j: len(examples[j].text))
        ]
        chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        rng.shuffle(chunks)
    else:
        chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    for chunk in chunks:
        yield [examples[i] for i in chunk]
