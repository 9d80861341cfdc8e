"""Build the token rows ("passes") of one item: label prompt from a cache, text tokenized alone.

The assembled ids equal the tokenization of the reference pipeline's full input string (see
`tokens.py`). The text is the only thing ever truncated; when the labels alone leave too little
room for the text they are split into chunks, one pass each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.tokens import LRUCache, PieceTokenizer
from gliclass_core.types import Example

LABEL, SEP, EXAMPLE = "<<LABEL>>", "<<SEP>>", "<<EXAMPLE>>"
MARKER_TEXTS = (LABEL, SEP, EXAMPLE)


class _Text:
    """Sentinel for where the item's text goes in a layout."""


TEXT = _Text()
Part = str | int | _Text


@dataclass(frozen=True)
class UniPayload:
    """Where a uni-encoder / fused row's label markers and text window are (positions in the row)."""

    markers: tuple[int, ...] | np.ndarray
    first_sep: int


@dataclass(frozen=True)
class BiPayload:
    """A bi-encoder row's labels (text and label-encoder ids); label vectors come from a cache."""

    labels: tuple[str, ...]
    label_ids: tuple[tuple[int, ...], ...]
    markers: tuple[int, ...] | np.ndarray = ()


@dataclass(frozen=True, eq=False)
class Row:
    """One assembled row before it becomes an EncodedPass (ids: a tuple, or int64 array in batches)."""

    input_ids: tuple[int, ...] | np.ndarray
    num_labels: int
    payload: UniPayload | BiPayload
    truncated: bool


@dataclass(frozen=True)
class _Template:
    head: tuple[int, ...]
    tail: tuple[int, ...]
    text_prefix: str
    text_suffix: str
    text_before: int | None
    text_after: int | None
    head_markers: tuple[int, ...]
    tail_markers: tuple[int, ...]
    head_sep: int | None
    tail_sep: int | None
    #: Marker texts tokenized around the text (context for the pre-tokenizer), dropped again.
    left: str = ""
    right: str = ""
    head_array: np.ndarray | None = None
    tail_array: np.ndarray | None = None
    #: Marker positions with tail markers relative to the text's end, and which of them shift.
    marker_array: np.ndarray | None = None
    marker_shift: np.ndarray | None = None


@dataclass(frozen=True)
class _LabelPlan:
    """Per label set (with prompt and examples): what chunk planning needs, computed once."""

    per_label: tuple[int, ...]
    total: int
    available: int


def format_example(example: Example) -> str:
    """Render one in-context example the way the reference pipeline does."""
    return f"{example.text} \nLabels:\n {', '.join(example.true_labels)}"


class Packer:
    """Turns (text, labels, prompt, examples) into rows for one checkpoint's architecture."""

    def __init__(
        self,
        pieces: PieceTokenizer,
        architecture: str,
        prompt_first: bool,
        max_length: int,
        label_ids: dict[str, int] | None = None,
        cache_size: int = 1024,
    ) -> None:
        self.pieces = pieces
        self.architecture = architecture
        self.prompt_first = prompt_first
        self.max_length = max_length
        self.ids = label_ids or {}
        self.templates = LRUCache(cache_size)
        self.wrap = len(pieces.prefix) + len(pieces.suffix)

    # -- layouts ---------------------------------------------------------------------------------
    def _layout(self, labels: Sequence[str], prompt: str | None, examples: Sequence[Example]) -> list[Part]:
        lab, sep, ex = self.ids[LABEL], self.ids[SEP], self.ids[EXAMPLE]
        example_parts: list[Part] = []
        if examples:
            for e in examples:
                example_parts += [ex, format_example(e)]
            example_parts.append(sep)
        if self.architecture == "uni-encoder":
            block: list[Part] = []
            for label in labels:
                block += [lab, label]
            block.append(sep)
            if prompt:
                block.append(prompt)
        else:  # bi-encoder-fused: optional "prompt " then one bare marker per label
            block = [prompt + " "] if prompt else []
            block += [lab] * len(labels) + [sep]
        if self.prompt_first:
            return [*block, TEXT, *example_parts]
        return [TEXT, *block, *example_parts]

    def _template(
        self, labels: tuple[str, ...], prompt: str | None, examples: tuple[Example, ...]
    ) -> _Template:
        key = (labels, prompt, examples)
        hit = self.templates.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        parts = _merge_strings(self._layout(labels, prompt, examples))
        # The text may share a piece with a neighbouring string (e.g. the prompt): keep them together.
        text_idx = next(i for i, p in enumerate(parts) if isinstance(p, tuple))
        text_slot = parts[text_idx]
        assert isinstance(text_slot, tuple)
        prefix, suffix = str(text_slot[0]), str(text_slot[1])
        head, head_markers, head_sep = self._compile(parts[:text_idx], parts, 0, len(self.pieces.prefix))
        tail, tail_markers, tail_sep = self._compile(parts[text_idx + 1 :], parts, text_idx + 1, 0)
        before = parts[text_idx - 1] if text_idx > 0 else None
        after = parts[text_idx + 1] if text_idx + 1 < len(parts) else None
        template = _Template(
            head=(*self.pieces.prefix, *head),
            tail=(*tail, *self.pieces.suffix),
            text_prefix=prefix,
            text_suffix=suffix,
            text_before=before if isinstance(before, int) else None,
            text_after=after if isinstance(after, int) else None,
            head_markers=head_markers,
            tail_markers=tail_markers,
            head_sep=head_sep,
            tail_sep=tail_sep,
            left=self.pieces.marker_text[before] if isinstance(before, int) else "",
            right=self.pieces.marker_text[after] if isinstance(after, int) else "",
            head_array=np.asarray((*self.pieces.prefix, *head), dtype=np.int64),
            tail_array=np.asarray((*tail, *self.pieces.suffix), dtype=np.int64),
            marker_array=np.asarray((*head_markers, *tail_markers), dtype=np.int64),
            marker_shift=np.asarray((0,) * len(head_markers) + (1,) * len(tail_markers), dtype=np.int64),
        )
        self.templates.put(key, template)
        return template

    def _compile(
        self, section: list[object], parts: list[object], start: int, offset: int
    ) -> tuple[list[int], tuple[int, ...], int | None]:
        ids: list[int] = []
        markers: list[int] = []
        first_sep: int | None = None
        for j, part in enumerate(section):
            i = start + j
            if isinstance(part, int):
                if part == self.ids.get(LABEL):
                    markers.append(offset + len(ids))
                elif part == self.ids.get(SEP) and first_sep is None:
                    first_sep = offset + len(ids)
                ids.append(part)
            else:
                assert isinstance(part, str)
                before = parts[i - 1] if i > 0 else None
                after = parts[i + 1] if i + 1 < len(parts) else None
                ids.extend(
                    self.pieces.piece(
                        part,
                        before if isinstance(before, int) else None,
                        after if isinstance(after, int) else None,
                    )
                )
        return ids, tuple(markers), first_sep

    # -- rows ------------------------------------------------------------------------------------
    def label_length(self, label: str) -> int:
        """Tokens a label occupies in a uni-encoder prompt (its marker included)."""
        return 1 + len(self.pieces.piece(label, self.ids[LABEL], self.ids[LABEL]))

    def marker_rows(
        self,
        text: str,
        labels: tuple[str, ...],
        prompt: str | None,
        examples: tuple[Example, ...],
        index: int | None,
    ) -> list[Row]:
        """Rows for the architectures whose input carries label markers (uni-encoder, fused)."""
        chunks = self.plan_chunks(text, labels, prompt, examples, index)
        rows = self.marker_rows_many([text], [chunks], [prompt], [examples])[0]
        return [
            Row(tuple(np.asarray(r.input_ids).tolist()), r.num_labels, r.payload, r.truncated) for r in rows
        ]

    def plan_chunks(
        self,
        text: str,
        labels: tuple[str, ...],
        prompt: str | None,
        examples: tuple[Example, ...],
        index: int | None,
    ) -> tuple[tuple[str, ...], ...]:
        """The label chunks (one pass each) of an item, without tokenizing its text.

        Raises InvalidInput when the labels, prompt and examples leave no room for a text, or one
        label alone needs more room than a chunk has. Cached per label set, prompt and examples.
        """
        plan = self._label_plan(labels, prompt, examples)
        # One pass when the labels leave the text all it needs, or at least half the room.
        if plan.total <= plan.available - min(self._text_estimate(text), plan.available // 2):
            chunks: tuple[tuple[str, ...], ...] = (labels,)
        else:
            chunks = self._split(labels, plan, index)
        for chunk in chunks:
            tpl = self._template(chunk, prompt, examples)
            if self.max_length - len(tpl.head) - len(tpl.tail) <= 0:
                raise InvalidInput(
                    f"the labels, prompt and examples need {len(tpl.head) + len(tpl.tail)} tokens, "
                    f"more than the model's maximum of {self.max_length}",
                    field="labels",
                    index=index,
                )
        return chunks

    def _label_plan(
        self, labels: tuple[str, ...], prompt: str | None, examples: tuple[Example, ...]
    ) -> _LabelPlan:
        key = ("plan", labels, prompt, examples)
        hit = self.templates.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        fixed = self._template((), prompt, examples)
        per_label = tuple(
            self.label_length(lab) if self.architecture == "uni-encoder" else 1 for lab in labels
        )
        plan = _LabelPlan(per_label, sum(per_label), self.max_length - len(fixed.head) - len(fixed.tail))
        self.templates.put(key, plan)
        return plan

    def _split(
        self, labels: tuple[str, ...], plan: _LabelPlan, index: int | None
    ) -> tuple[tuple[str, ...], ...]:
        # Labels get at most half the room per chunk so every chunk still sees a fair part of the text.
        capacity = max(plan.available // 2, 1)
        chunks: list[tuple[str, ...]] = []
        current: list[str] = []
        used = 0
        for label, n in zip(labels, plan.per_label):
            if n > capacity:
                raise InvalidInput(
                    f"label {label!r} needs {n} tokens, more than the model can hold next to a text "
                    f"({capacity} of max_length {self.max_length})",
                    field="labels",
                    index=index,
                )
            if current and used + n > capacity:
                chunks.append(tuple(current))
                current, used = [], 0
            current.append(label)
            used += n
        chunks.append(tuple(current))
        return tuple(chunks)

    def marker_rows_many(
        self,
        texts: Sequence[str],
        chunk_lists: Sequence[Sequence[tuple[str, ...]]],
        prompts: Sequence[str | None],
        examples: Sequence[tuple[Example, ...]],
    ) -> list[list[Row]]:
        """Rows of many items (chunks from `plan_chunks`), every text tokenized in one batch call."""
        templates: list[_Template] = []
        strings: list[str] = []
        seen: dict[tuple[object, ...], _Template] = {}  # the cache is consulted once per label set
        for text, chunks, prompt, ex in zip(texts, chunk_lists, prompts, examples):
            for chunk in chunks:
                key = (chunk, prompt, ex)
                tpl = seen.get(key)
                if tpl is None:
                    tpl = seen[key] = self._template(chunk, prompt, ex)
                templates.append(tpl)
                strings.append(tpl.left + tpl.text_prefix + text + tpl.text_suffix + tpl.right)
        encoded = self.pieces.encode_many(strings)
        out: list[list[Row]] = []
        k = 0
        for chunks in chunk_lists:
            rows = []
            for chunk in chunks:
                tpl, ids = templates[k], encoded[k]
                k += 1
                rows.append(self._assemble(tpl, chunk, ids))
            out.append(rows)
        return out

    def _assemble(self, tpl: _Template, chunk: tuple[str, ...], ids: list[int]) -> Row:
        assert tpl.head_array is not None and tpl.tail_array is not None
        start = 1 if tpl.text_before is not None else 0
        end = len(ids) - (1 if tpl.text_after is not None else 0)
        head, tail = tpl.head_array, tpl.tail_array
        room = self.max_length - len(head) - len(tail)
        if room <= 0:  # plan_chunks raises this before any tokenization; kept for direct callers
            raise InvalidInput(
                f"the labels, prompt and examples need {len(head) + len(tail)} tokens, "
                f"more than the model's maximum of {self.max_length}",
                field="labels",
            )
        n = max(0, end - start)
        truncated = n > room
        n = min(n, max(room, 0))
        row = np.empty(len(head) + n + len(tail), dtype=np.int64)
        row[: len(head)] = head
        row[len(head) : len(head) + n] = ids[start : start + n]
        row[len(head) + n :] = tail
        shift = len(head) + n
        markers: tuple[int, ...] | np.ndarray = tpl.head_markers
        if tpl.tail_markers:
            assert tpl.marker_array is not None and tpl.marker_shift is not None
            markers = tpl.marker_array + tpl.marker_shift * shift
        first_sep = tpl.head_sep if tpl.head_sep is not None else shift + (tpl.tail_sep or 0)
        payload: UniPayload | BiPayload = UniPayload(markers, first_sep)
        if self.architecture == "bi-encoder-fused":
            payload = BiPayload(chunk, self.label_set_ids(chunk), markers)
        return Row(row, len(chunk), payload, truncated)

    def _text_estimate(self, text: str) -> int:
        # Cheap upper bound avoids tokenizing the text twice; exact counts are taken per row.
        return len(text) + 2

    def bi_row(self, text: str, labels: tuple[str, ...], prompt: str | None) -> Row:
        """The single row of a plain bi-encoder: the text alone; labels go to the label encoder."""
        row = self.bi_rows_many([text], [labels], [prompt])[0]
        return Row(tuple(np.asarray(row.input_ids).tolist()), row.num_labels, row.payload, row.truncated)

    def bi_rows_many(
        self, texts: Sequence[str], labels: Sequence[tuple[str, ...]], prompts: Sequence[str | None]
    ) -> list[Row]:
        """Rows of many bi-encoder items, every text tokenized in one batch call."""
        strings = [f"{prompt} {text}" if prompt else text for text, prompt in zip(texts, prompts)]
        prefix, suffix = self.pieces.prefix, self.pieces.suffix
        rows = []
        for ids, item_labels in zip(self.pieces.encode_many(strings), labels):
            full = (*prefix, *ids, *suffix)
            truncated = len(full) > self.max_length
            if truncated:
                full = full[: self.max_length - len(suffix)] + suffix
            payload = BiPayload(item_labels, self.label_set_ids(item_labels))
            rows.append(Row(np.asarray(full, dtype=np.int64), len(item_labels), payload, truncated))
        return rows

    def label_set_ids(self, labels: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
        """Label-encoder ids of every label in a set, cached per set (one lookup per item)."""
        key = ("label-ids", labels)
        hit = self.templates.get(key)
        if hit is None:
            hit = tuple(self.label_encoder_ids(label) for label in labels)
            self.templates.put(key, hit)
        return hit  # type: ignore[no-any-return]

    def label_encoder_ids(self, label: str) -> tuple[int, ...]:
        """Ids the label encoder reads for one label (its own [CLS] ... [SEP])."""
        ids = self.pieces.plain(label)
        if len(ids) > self.max_length:
            ids = ids[: self.max_length - len(self.pieces.suffix)] + self.pieces.suffix
        return ids


def _merge_strings(parts: list[Part]) -> list[object]:
    """Join adjacent strings; the run holding TEXT becomes a (prefix, suffix) tuple around it."""
    out: list[object] = []
    run: list[Part] = []

    def flush() -> None:
        if not run:
            return
        if any(p is TEXT for p in run):
            i = next(k for k, p in enumerate(run) if p is TEXT)
            out.append(("".join(str(p) for p in run[:i]), "".join(str(p) for p in run[i + 1 :])))
        else:
            joined = "".join(str(p) for p in run)
            if joined:
                out.append(joined)
        run.clear()

    for part in parts:
        if isinstance(part, int):
            flush()
            out.append(part)
        else:
            run.append(part)
    flush()
    return out
