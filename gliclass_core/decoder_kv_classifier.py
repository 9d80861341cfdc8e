"""`DecoderKVClassifier`: a decoder-kv GLiClass checkpoint behind the model contract (`gliclass_core.model`).

Rows are `[prompt][examples]text<<SEP>>label1<<LABEL>>...<<SEP>>` (the reference's
`DecoderKVZeroShotClassificationPipeline`): the context (prompt, examples, text) and the label
block are tokenized apart and joined; a context longer than `max_length` less the label block keeps
its beginning (the reference truncates the same way). Items are tokenized in `plan`, as GliZNet's
are. The same model serves streaming sessions (`gliclass_core.runtime.sessions`), which keep a
text's decoder cache and score label blocks against it, unless its backbone is a bidirectional
encoder (EmbeddingGemma 2) without a KV cache: those models classify whole rows only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gliclass_core.devices import resolve_device, resolve_dtype
from gliclass_core.errors import CheckpointError, InvalidInput
from gliclass_core.items import check_item_options
from gliclass_core.model import Model, model_info
from gliclass_core.modeling.decoder_kv import DecoderKVNetwork, load_decoder_kv
from gliclass_core.processing import predictions
from gliclass_core.processing.packing import EXAMPLE, LABEL, SEP, format_example
from gliclass_core.processing.tokens import LRUCache
from gliclass_core.processing.validation import validate_item
from gliclass_core.types import ClassifyItem, EncodedPass, Example, ItemPlan, Prediction, PreparedItem

DEFAULT_MAX_LENGTH = 1024


@dataclass(frozen=True)
class DecoderKVRow:
    """One pass: the row's token ids and where its label block (after the opening <<SEP>>) starts."""

    ids: tuple[int, ...]
    block_start: int


class DecoderKVClassifier(Model):
    """A loaded decoder-kv model on one device, implementing the model contract."""

    def __init__(self, network: DecoderKVNetwork, tokenizer: Any, model_id: str, device: str, dtype: Any,
                 max_length: int, label_cache_size: int = 4096) -> None:  # fmt: skip
        self.network = network
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        self.max_length = max_length
        self.label_cache_size = label_cache_size
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad if pad is not None else (getattr(tokenizer, "eos_token_id", None) or 0))
        self._blocks = LRUCache(label_cache_size)
        cfg = network.cfg
        sessions = str(not cfg.bidirectional).lower()  # a bidirectional backbone keeps no KV cache
        self.info = model_info(
            model_id, "decoder-kv", device, dtype, max_length, cfg.decoder_config.get("model_type"),
            backbone=cfg.backbone, hybrid=str(cfg.hybrid).lower(), sessions=sessions,
        )  # fmt: skip

    @classmethod
    def load(cls, directory: str | Path, model_id: str, device: str = "auto", dtype: str | None = None,
             max_length: int | None = None) -> DecoderKVClassifier:  # fmt: skip
        """Load a decoder-kv checkpoint directory onto `device` (auto: CUDA when present)."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        network = load_decoder_kv(directory)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
        except Exception as exc:
            raise CheckpointError(f"{directory}: cannot load the tokenizer ({exc})") from exc
        cfg = network.cfg
        for text, idx in ((LABEL, cfg.class_token_index), (SEP, cfg.sep_token_index)):
            got = tokenizer.convert_tokens_to_ids(text)
            if got != idx:
                raise CheckpointError(f"{directory}: tokenizer maps {text} to {got}, config.json says {idx}")
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        network.to(device=dev, dtype=torch_dtype)
        limit = cfg.text_config.get("max_position_embeddings")
        length = int(max_length or DEFAULT_MAX_LENGTH)
        if isinstance(limit, int) and limit > 0:
            length = min(length, limit)
        return cls(network, tokenizer, model_id, dev, torch_dtype, length)

    def replicate(self, device: str) -> DecoderKVClassifier:
        """Return a copy on `device`, sharing the tokenizer and the label-block cache."""
        dev = resolve_device(device)
        network = self.network if dev == self.device else copy.deepcopy(self.network).to(device=dev)
        clone = DecoderKVClassifier(network, self.tokenizer, self.model_id, dev, self.dtype, self.max_length,
                                    self.label_cache_size)  # fmt: skip
        clone._blocks = self._blocks
        return clone

    # -- tokenization shared with sessions -------------------------------------------------------
    def tokens(self, text: str) -> list[int]:
        """Token ids of `text` alone (no special tokens added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def label_block(self, labels: Sequence[str]) -> tuple[int, ...]:
        """Ids of `<<SEP>>label1<<LABEL>>...<<SEP>>` (cached per label list)."""
        key = tuple(labels)
        block = self._blocks.get(key)
        if block is None:
            block = tuple(self.tokens(SEP + "".join(label + LABEL for label in key) + SEP))
            self._blocks.put(key, block)
        return block  # type: ignore[no-any-return]

    @staticmethod
    def prefix(prompt: str | None, examples: Sequence[Example]) -> str:
        """The context before the text: the prompt, then the examples and one <<SEP>> after them."""
        shown = "".join(EXAMPLE + format_example(e) for e in examples)
        return (prompt or "") + (shown + SEP if shown else "")

    # -- the model contract ----------------------------------------------------------------------
    def plan(self, item: ClassifyItem, index: int | None = None) -> ItemPlan:
        """Validate and tokenize one item now (one pass: every label in one block)."""
        validate_item(item, index)
        check_item_options(item, index)
        if item.long_text.mode == "chunk":
            from gliclass_core.processing.long_text import prepare_chunked

            return ItemPlan(item, (), prepared=prepare_chunked(self.prepare, item, index))
        block = self.label_block(item.labels)
        budget = self.max_length - len(block)
        if budget < 1:
            raise InvalidInput(
                f"the label block takes {len(block)} tokens; the model reads at most {self.max_length}",
                field="labels", index=index,
            )  # fmt: skip
        context = self.tokens(self.prefix(item.prompt, item.examples) + item.text)
        truncated = len(context) > budget
        context = context[:budget]
        row = DecoderKVRow(tuple(context) + block, len(context) + 1)
        prepared = PreparedItem(item, (EncodedPass(row.ids, len(item.labels), row),), truncated=truncated)
        return ItemPlan(item, (), prepared=prepared)

    def encode(self, plans: Sequence[ItemPlan]) -> list[PreparedItem]:
        """The items `plan` tokenized."""
        out = []
        for plan in plans:
            if plan.prepared is None:
                raise ValueError("a decoder-kv plan carries its tokenized item")
            out.append(plan.prepared)
        return out

    def forward(self, passes: Sequence[EncodedPass]) -> list[np.ndarray]:
        """One right-padded forward pass; float32 logits per pass."""
        rows = [(p.payload.ids, p.payload.block_start) for p in passes]
        return self.network.score_rows(rows, self.pad_id)

    def finish(self, prepared: PreparedItem, logits: Sequence[np.ndarray]) -> Prediction:
        """Turn the logits of an item's passes into scores and predicted labels."""
        return predictions.finish(prepared, logits)

    def finish_many(
        self, prepared: Sequence[PreparedItem], logits: Sequence[Sequence[np.ndarray]]
    ) -> list[Prediction | Exception]:
        """`finish` for many items, vectorised per label count and mode."""
        return predictions.finish_many(prepared, logits)
