"""The public model API: `Classifier.from_pretrained(...).classify(...)`, and the GLiClass model.

`Classifier` runs GLiClass checkpoints (and the builtin) behind the model contract of
`gliclass_core.model` (plan / encode / forward / finish, what the runtime batches across callers);
`Classifier.from_pretrained` returns a `GliZNetClassifier` for GliZNet checkpoints.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from gliclass_core.devices import resolve_device, resolve_dtype
from gliclass_core.errors import CheckpointError, UnsupportedModel
from gliclass_core.items import check_item_options
from gliclass_core.model import Model, model_info
from gliclass_core.modeling.positions import usable_positions
from gliclass_core.processing import predictions, relative
from gliclass_core.processing.tokens import LRUCache
from gliclass_core.processing.validation import validate_item
from gliclass_core.types import ClassifyItem, EncodedPass, ItemPlan, Prediction, PreparedItem

DEFAULT_MAX_LENGTH = 1024


class Classifier(Model):
    """A loaded GLiClass-family model on one device (the contract: `gliclass_core.model`)."""

    def __init__(self, network: Any, config: Any, tokenizer: Any, packer: Any, device: str, dtype: Any,
                 model_id: str, label_cache_size: int = 8192) -> None:  # fmt: skip
        self.network = network
        self.config = config
        self.tokenizer = tokenizer
        self.packer = packer
        self.device = device
        self.dtype = dtype
        self.model_id = model_id
        self.pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        self.label_cache_size = label_cache_size
        # Bi-encoder label vectors depend only on the label text: cached per replica (on its device).
        self.label_vectors = LRUCache(label_cache_size)
        # Optional: logits relative to the item's other labels (config "relative_scoring").
        self.relative = relative.from_config(getattr(config, "raw", {}) or {})
        self.info = model_info(
            model_id, config.architecture, device, dtype, packer.max_length,
            config.encoder_config.get("model_type"), pooling=config.pooling, scorer=config.scorer,
            calibrated=str(bool(getattr(config, "use_calibrator", False))).lower(),
        )  # fmt: skip

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        source: str,
        device: str = "auto",
        dtype: str | None = None,
        engine: str = "torch",
        **kwargs: Any,
    ) -> Model:
        """Load `builtin:minilm`, a local checkpoint directory, or a hub id.

        Returns a `Classifier`, or a `GliZNetClassifier` for a GliZNet checkpoint (both `Model`s).

        `engine="onnx"` (CPU) runs the encoders in ONNX Runtime, `dtype` "float32" or "int8"
        (see gliclass_core/modeling/onnx_engine.py); the default is torch at `dtype`.
        Keyword options: `max_length` (capped at the encoder's position limit), `label_cache_size`.
        """

        from gliclass_core.gliznet_classifier import GliZNetClassifier
        from gliclass_core.modeling.decoder_kv import is_decoder_kv_dir
        from gliclass_core.modeling.gliznet_format import is_gliznet_dir
        from gliclass_core.modeling.loading import load_network, load_tokenizer, read_config, resolve_source
        from gliclass_core.modeling.onnx_engine import resolve_engine
        from gliclass_core.processing.packing import MARKER_TEXTS, Packer
        from gliclass_core.processing.tokens import PieceTokenizer

        engine, engine_dtype = resolve_engine(engine, dtype, device)
        if engine_dtype is not None:
            device, dtype = "cpu", None
        directory = resolve_source(source)
        if is_gliznet_dir(directory):  # model_type "gliznet": its own packing and forward (training area)
            if engine_dtype is not None:
                raise UnsupportedModel('engine "onnx" runs GLiClass checkpoints; GliZNet runs on "torch"')
            return GliZNetClassifier.load(directory, source, device=device, dtype=dtype)
        if is_decoder_kv_dir(directory):  # a decoder LLM backbone: its own rows, and streaming sessions
            from gliclass_core.decoder_kv_classifier import DecoderKVClassifier

            if engine_dtype is not None:
                raise UnsupportedModel(
                    'engine "onnx" runs GLiClass encoder checkpoints; decoder-kv runs on "torch"'
                )
            return DecoderKVClassifier.load(directory, source, device, dtype, kwargs.get("max_length"))
        cfg = read_config(directory)
        tokenizer = load_tokenizer(directory, cfg)
        markers: dict[str, int] = {}
        if cfg.uses_markers:
            wanted = dict(zip(MARKER_TEXTS, (cfg.class_token_index, cfg.text_token_index,
                                              cfg.example_token_index)))  # fmt: skip
            for text, idx in wanted.items():
                got = tokenizer.convert_tokens_to_ids(text)
                if got != idx:
                    raise CheckpointError(
                        f"{directory}: tokenizer maps {text} to {got}, config.json says {idx}"
                    )
            markers = wanted
        network = load_network(directory, cfg)
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        network.to(device=dev, dtype=torch_dtype)
        max_length = _max_length(cfg, kwargs.get("max_length"))
        pieces = PieceTokenizer(tokenizer, markers)
        packer = Packer(pieces, cfg.architecture, cfg.prompt_first, max_length, markers)
        clf = cls(network, cfg, tokenizer, packer, dev, torch_dtype, source,
                  int(kwargs.get("label_cache_size", 8192)))  # fmt: skip
        if engine_dtype is not None:
            from gliclass_core.modeling.onnx_engine import attach

            attach(clf, engine_dtype)
            clf.info = replace(clf.info, dtype=engine_dtype, extra={**clf.info.extra, "engine": "onnx"})
        return clf

    def replicate(self, device: str) -> Classifier:
        """Return a copy of this model on `device`, sharing tokenizer and label-prompt caches."""
        dev = resolve_device(device)
        if dev == self.device:
            network = self.network
        else:
            network = copy.deepcopy(self.network).to(device=dev)
        clone = Classifier(network, self.config, self.tokenizer, self.packer, dev, self.dtype,
                           self.model_id, self.label_cache_size)  # fmt: skip
        if getattr(self.network, "encoder_engine", None) is not None:  # an engine's replicas share it
            if dev != self.device:
                raise UnsupportedModel(f'engine "onnx" runs on CPU only, not {dev!r}')
            clone.info = self.info
        return clone

    # -- the model contract ----------------------------------------------------------------------
    def plan(self, item: ClassifyItem, index: int | None = None) -> ItemPlan:
        """Validate an item and plan its passes without tokenizing its text (cheap, thread-safe).

        Raises InvalidInput naming the field (and `index`). Everything that can reject an item is
        checked here, so `encode` of a plan does not fail on input.
        """
        validate_item(item, index)
        check_item_options(item, index)
        if item.long_text.mode == "chunk":
            from gliclass_core.processing.long_text import prepare_chunked

            # Tokenized now, chunk by chunk: the long-document mode is opt-in and off the hot path.
            return ItemPlan(item, (), prepared=prepare_chunked(self.prepare, item, index))
        labels = tuple(item.labels)
        if self.config.architecture == "bi-encoder":
            return ItemPlan(item, (labels,))
        if self.config.is_encoder_decoder:  # its own row layout, tokenized now (not the hot path's)
            from gliclass_core.processing.encdec import encdec_row

            row = encdec_row(self.packer.pieces, item.text, labels, item.prompt, tuple(item.examples),
                             self.packer.max_length, index)  # fmt: skip
            prepared = PreparedItem(item, (EncodedPass(row.input_ids, row.num_labels, row.payload),),
                                    truncated=row.truncated)  # fmt: skip
            return ItemPlan(item, (), prepared=prepared)
        chunks = self.packer.plan_chunks(item.text, labels, item.prompt, tuple(item.examples), index)
        return ItemPlan(item, chunks)

    def encode(self, plans: Sequence[ItemPlan]) -> list[PreparedItem]:
        """Tokenize planned items: every text of every pass in one Rust `encode_batch` call."""
        todo = [p for p in plans if p.prepared is None]
        rows: list[list[Any]]
        if not todo:
            rows = []
        elif self.config.architecture == "bi-encoder":
            texts = [p.item.text for p in todo]
            bi_rows = self.packer.bi_rows_many(
                texts, [p.chunks[0] for p in todo], [p.item.prompt for p in todo]
            )
            rows = [[r] for r in bi_rows]
        else:
            rows = self.packer.marker_rows_many(
                [p.item.text for p in todo],
                [p.chunks for p in todo],
                [p.item.prompt for p in todo],
                [tuple(p.item.examples) for p in todo],
            )
        it = iter(rows)
        out = []
        for plan in plans:
            if plan.prepared is not None:
                out.append(plan.prepared)
                continue
            item_rows = next(it)
            passes = tuple(EncodedPass(r.input_ids, r.num_labels, r.payload) for r in item_rows)
            out.append(PreparedItem(plan.item, passes, truncated=any(r.truncated for r in item_rows)))
        return out

    def forward(self, passes: Sequence[EncodedPass]) -> list[np.ndarray]:
        """Run one padded forward pass; return float32 logits per pass (length `num_labels`)."""
        from gliclass_core.modeling.forward import run_forward

        if not passes:
            return []
        return run_forward(self.network, self.config, passes, pad_id=self.pad_id, device=self.device,
                           label_cache=self.label_vectors)  # fmt: skip

    def finish(self, prepared: PreparedItem, logits: Sequence[np.ndarray]) -> Prediction:
        """Turn the logits of an item's passes into scores and predicted labels."""
        return predictions.finish(prepared, logits, self.relative)

    def finish_many(
        self, prepared: Sequence[PreparedItem], logits: Sequence[Sequence[np.ndarray]]
    ) -> list[Prediction | Exception]:
        """`finish` for many items: one vectorised sigmoid/softmax per label count and mode."""
        return predictions.finish_many(prepared, logits, self.relative)


def _max_length(cfg: Any, requested: int | None) -> int:
    limit = usable_positions(cfg.encoder_config)
    value = int(requested) if requested else DEFAULT_MAX_LENGTH
    return min(value, limit) if limit else value


__all__ = ["Classifier"]
