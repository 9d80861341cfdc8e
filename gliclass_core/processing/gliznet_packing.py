"""GliZNet input packing: `[CLS] text [SEP] label1 [LAB] label2 [LAB] ... labelK [LAB]`.

One pass scores a text against as many labels as fit beside it; the labels that do not fit go to
further passes of the same text (each keeping at least `MIN_TEXT_TOKENS` of it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gliclass_core.errors import CheckpointError, InvalidInput
from gliclass_core.processing.tokens import LRUCache

LAB_TOKEN = "[LAB]"
# Labels are tokenized once and reused; bounded so an open-ended label stream cannot grow memory.
LABEL_CACHE_SIZE = 4096
# A pass never squeezes the text below this many tokens to fit more labels; extra labels go to another pass.
MIN_TEXT_TOKENS = 32


class PackingConfig(Protocol):
    """What packing reads of a `GliZNetConfig`: the row length limit and the `[LAB]` id."""

    max_length: int
    lab_token_id: int


@dataclass(frozen=True)
class GliZNetPass:
    """One batch row; field names match `EncodedPass` so the runtime can batch it like any other."""

    input_ids: tuple[int, ...]
    num_labels: int
    payload: tuple[tuple[int, int], ...]  # [start, end) token span of each label; [LAB] at `end`
    labels: tuple[str, ...] = ()
    truncated: bool = False

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)


class GliZNetPacker:
    """Packs texts and labels into GliZNet rows with `tokenizer`, within `config.max_length`."""

    def __init__(self, tokenizer: Any, config: PackingConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if cls_id is None or sep_id is None:
            raise CheckpointError("GliZNet needs a tokenizer with CLS/SEP (or BOS/EOS) tokens")
        self.cls_id, self.sep_id = int(cls_id), int(sep_id)
        self._label_cache = LRUCache(LABEL_CACHE_SIZE)  # thread-safe: prepare() runs on many threads

    def label_ids(self, label: str) -> tuple[int, ...]:
        """Token ids of one label (no special tokens), cached."""
        ids = self._label_cache.get(label)
        if ids is None:
            ids = tuple(self.tokenizer(label, add_special_tokens=False)["input_ids"])
            self._label_cache.put(label, ids)
        return ids  # type: ignore[no-any-return]

    def pack(
        self, text: str, labels: Sequence[str], prompt: str | None = None, max_passes: int | None = None
    ) -> list[GliZNetPass]:
        """Pack one item into passes; labels that do not fit beside the text go to further passes."""
        if not labels:
            raise InvalidInput("at least one label is required", field="labels")
        text_ids = list(
            self.tokenizer((prompt + " " + text) if prompt else text, add_special_tokens=False)["input_ids"]
        )
        budget = self.config.max_length - 2  # CLS + SEP
        label_room = budget - min(len(text_ids), MIN_TEXT_TOKENS)
        chunks: list[list[tuple[str, tuple[int, ...]]]] = [[]]
        used = 0
        for label in labels:
            ids = self.label_ids(label)
            if not ids:
                raise InvalidInput(f"label {label!r} is empty after tokenization", field="labels")
            cost = len(ids) + 1
            if cost > label_room:
                raise InvalidInput(f"label {label[:40]!r} is too long ({len(ids)} tokens)", field="labels")
            if used + cost > label_room and chunks[-1]:
                chunks.append([])
                used = 0
            chunks[-1].append((label, ids))
            used += cost
        if max_passes is not None and len(chunks) > max_passes:
            chunks = chunks[:max_passes]
        return [self._pack_chunk(text_ids, chunk) for chunk in chunks]

    def _pack_chunk(self, text_ids: list[int], chunk: list[tuple[str, tuple[int, ...]]]) -> GliZNetPass:
        label_tokens = sum(len(ids) + 1 for _, ids in chunk)
        room = self.config.max_length - 2 - label_tokens
        truncated = len(text_ids) > room
        ids = [self.cls_id, *text_ids[:room], self.sep_id]
        spans = []
        for _, lab_ids in chunk:
            start = len(ids)
            ids.extend(lab_ids)
            spans.append((start, len(ids)))
            ids.append(self.config.lab_token_id)
        return GliZNetPass(tuple(ids), len(chunk), tuple(spans), tuple(lbl for lbl, _ in chunk), truncated)
