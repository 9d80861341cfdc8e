"""The public model API: `Classifier.from_pretrained(...).classify(...)`.

Contract with the runtime (gliclass_core.runtime), which batches across callers:

    prepared = clf.prepare(item, index)        # validate + tokenize; CPU only, thread-safe, no forward pass
    prepared.passes                            # 1 pass normally; >1 when the labels need several chunks
    pass_.num_tokens                           # tokens this pass puts in a batch row (before padding)
    logits = replica.forward(passes)           # one padded forward pass over passes of ANY items/label sets
    clf.finish(prepared, [logits of its passes, in order]) -> Prediction

`forward` is the only method that touches the device; `prepare` and `finish` are cheap CPU work.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np

from gliclass_core.errors import InvalidInput, UnsupportedModel
from gliclass_core.types import ClassifyItem, Example, ModelInfo, Prediction

DEFAULT_MAX_LENGTH = 1024
_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}  # fmt: skip


@dataclass(frozen=True)
class EncodedPass:
    """One row of a forward batch: token ids plus what the head needs to read the labels back.

    `payload` is model-specific (e.g. label ids for a bi-encoder); the runtime never looks inside.
    """

    input_ids: tuple[int, ...]
    num_labels: int
    payload: Any = None

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class PreparedItem:
    """A validated, tokenized item: its passes and how to reassemble their logits."""

    item: ClassifyItem
    passes: tuple[EncodedPass, ...]
    truncated: bool = False


class Classifier:
    """A loaded GLiClass-family model on one device (see module docstring for the batching contract)."""

    info: ModelInfo

    def __init__(self, network: Any, config: Any, tokenizer: Any, packer: Any, device: str, dtype: Any,
                 model_id: str, label_cache_size: int = 8192) -> None:  # fmt: skip
        from gliclass_core.processing.tokens import LRUCache

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
        self.info = ModelInfo(
            model_id=model_id,
            architecture=config.architecture,
            device=device,
            dtype=str(dtype).removeprefix("torch."),
            max_length=packer.max_length,
            max_labels=1000,
            extra={
                "pooling": config.pooling,
                "scorer": config.scorer,
                "encoder": str(config.encoder_config.get("model_type")),
            },
        )

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        source: str,
        device: str = "auto",
        dtype: str | None = None,
        engine: str = "torch",
        **kwargs: Any,
    ) -> Classifier:
        """Load `builtin:minilm`, a local checkpoint directory, or a hub id.

        `engine="onnx"` (CPU) runs the encoders in ONNX Runtime, `dtype` "float32" or "int8"
        (see gliclass_core/modeling/onnx_engine.py); the default is torch at `dtype`.
        Keyword options: `max_length` (capped at the encoder's position limit), `label_cache_size`.
        """

        from gliclass_core.modeling.loading import load_network, load_tokenizer, read_config, resolve_source
        from gliclass_core.modeling.onnx_engine import resolve_engine
        from gliclass_core.processing.packing import MARKER_TEXTS, Packer
        from gliclass_core.processing.tokens import PieceTokenizer

        engine, engine_dtype = resolve_engine(engine, dtype, device)
        if engine_dtype is not None:
            device, dtype = "cpu", None
        directory = resolve_source(source)
        from gliclass_core.modeling.gliznet import GliZNetClassifier, is_gliznet_dir

        if is_gliznet_dir(directory):  # model_type "gliznet": its own packing and forward (training area)
            if engine_dtype is not None:
                raise UnsupportedModel('engine "onnx" runs GLiClass checkpoints; GliZNet runs on "torch"')
            return GliZNetClassifier.load(directory, source, device=device, dtype=dtype)
        cfg = read_config(directory)
        tokenizer = load_tokenizer(directory, cfg)
        markers: dict[str, int] = {}
        if cfg.uses_markers:
            wanted = dict(zip(MARKER_TEXTS, (cfg.class_token_index, cfg.text_token_index,
                                              cfg.example_token_index)))  # fmt: skip
            for text, idx in wanted.items():
                got = tokenizer.convert_tokens_to_ids(text)
                if got != idx:
                    from gliclass_core.errors import CheckpointError

                    raise CheckpointError(
                        f"{directory}: tokenizer maps {text} to {got}, config.json says {idx}"
                    )
            markers = wanted
        network = load_network(directory, cfg)
        dev = _resolve_device(device)
        torch_dtype = _resolve_dtype(dtype, dev)
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
        dev = _resolve_device(device)
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

    # -- the batching contract -------------------------------------------------------------------
    def prepare(self, item: ClassifyItem, index: int | None = None) -> PreparedItem:
        """Validate and tokenize one item. Raises InvalidInput naming the field (and `index`)."""
        from gliclass_core.processing.validation import validate_item

        validate_item(item, index)
        labels = tuple(item.labels)
        examples = tuple(item.examples)
        if self.config.architecture == "bi-encoder":
            rows = [self.packer.bi_row(item.text, labels, item.prompt)]
        else:
            rows = self.packer.marker_rows(item.text, labels, item.prompt, examples, index)
        passes = tuple(EncodedPass(r.input_ids, r.num_labels, r.payload) for r in rows)
        return PreparedItem(item=item, passes=passes, truncated=any(r.truncated for r in rows))

    def forward(self, passes: Sequence[EncodedPass]) -> list[np.ndarray]:
        """Run one padded forward pass; return float32 logits per pass (length `num_labels`)."""
        from gliclass_core.modeling.batching import run_forward

        if not passes:
            return []
        return run_forward(self, passes)

    def finish(self, prepared: PreparedItem, logits: Sequence[np.ndarray]) -> Prediction:
        """Turn the logits of an item's passes into scores and predicted labels."""
        from gliclass_core.processing.postprocess import decide, scores_from_logits

        item = prepared.item
        if len(logits) != len(prepared.passes):
            raise ValueError(f"expected logits for {len(prepared.passes)} passes, got {len(logits)}")
        flat = np.concatenate([np.asarray(x, dtype=np.float32).reshape(-1) for x in logits])
        labels = tuple(item.labels)
        if flat.shape[0] != len(labels):
            raise ValueError(f"expected {len(labels)} logits, got {flat.shape[0]}")
        scores = scores_from_logits(flat, item.multi_label)
        predicted = decide(labels, scores, item.multi_label, item.threshold, item.top_k)
        return Prediction(
            scores={label: float(s) for label, s in zip(labels, scores)},
            labels=predicted,
            label_chunks=len(prepared.passes),
            truncated=prepared.truncated,
        )

    def classify(
        self,
        texts: str | Sequence[str],
        labels: Sequence[str] | Sequence[Sequence[str]],
        threshold: float | Mapping[str, float] = 0.5,
        multi_label: bool = True,
        prompt: str | Sequence[str | None] | None = None,
        examples: Sequence[Example] | None = None,
        top_k: int | None = None,
        batch_size: int = 32,
    ) -> list[Prediction]:
        """Classify texts offline (length-sorted batches, input order restored)."""
        items = build_items(texts, labels, threshold, multi_label, prompt, examples, top_k)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput("must be a positive integer", field="batch_size")
        prepared = [self.prepare(item, i) for i, item in enumerate(items)]
        flat = [(i, j) for i, p in enumerate(prepared) for j in range(len(p.passes))]
        # Sorting by length keeps padding small; results go back to their item and pass slot.
        flat.sort(key=lambda ij: prepared[ij[0]].passes[ij[1]].num_tokens)
        out: list[list[np.ndarray | None]] = [[None] * len(p.passes) for p in prepared]
        for start in range(0, len(flat), batch_size):
            chunk = flat[start : start + batch_size]
            results = self.forward([prepared[i].passes[j] for i, j in chunk])
            for (i, j), logits in zip(chunk, results):
                out[i][j] = logits
        return [self.finish(p, [x for x in o if x is not None]) for p, o in zip(prepared, out)]


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
    else:
        prompts = list(prompt)
        if len(prompts) != n:
            raise InvalidInput(f"{len(prompts)} prompts for {n} texts", field="prompt")
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


def _resolve_device(device: str) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return "cuda:0"
    return str(device)


def _resolve_dtype(dtype: str | None, device: str) -> Any:
    import torch

    if dtype in (None, "", "auto"):
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    name = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise InvalidInput(f"unknown dtype {dtype!r} (float32, float16, bfloat16)", field="dtype")
    return getattr(torch, name)


def _max_length(cfg: Any, requested: int | None) -> int:
    limit = cfg.max_position_embeddings
    if cfg.encoder_config.get("model_type") in ("roberta", "xlm-roberta", "camembert") and limit:
        limit -= 2  # these reserve the first positions for padding offsets
    value = int(requested) if requested else DEFAULT_MAX_LENGTH
    return min(value, limit) if limit else value


__all__ = ["Classifier", "EncodedPass", "PreparedItem", "build_items"]
