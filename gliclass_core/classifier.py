"""The public model API: `Classifier.from_pretrained(...).classify(...)`.

Contract with the runtime (gliclass_core.runtime), which batches across callers:

    prepared = clf.prepare(item, index)        # validate + tokenize; CPU only, thread-safe, no forward pass
    plan = clf.plan(item, index)               # validate + plan the passes, no tokenization (cheap)
    clf.encode([plan, ...]) -> [PreparedItem]  # tokenize many items in one Rust batch call
    prepared.passes                            # 1 pass normally; >1 when the labels need several chunks
    pass_.num_tokens                           # tokens this pass puts in a batch row (before padding)
    logits = replica.forward(passes)           # one padded forward pass over passes of ANY items/label sets
    clf.finish(prepared, [logits of its passes, in order]) -> Prediction
    clf.finish_many([prepared, ...], [[logits], ...])       # the same, vectorised over a batch

`forward` is the only method that touches the device; `prepare` and `finish` are cheap CPU work.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np

from gliclass_core.errors import InvalidInput, UnsupportedModel
from gliclass_core.types import TRUNCATE, ClassifyItem, Example, LongText, ModelInfo, Prediction

DEFAULT_MAX_LENGTH = 1024
_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}  # fmt: skip


@dataclass(frozen=True, eq=False)
class EncodedPass:
    """One row of a forward batch: token ids plus what the head needs to read the labels back.

    `input_ids` is a 1-D int64 array (GliZNet passes may carry a tuple). `payload` is
    model-specific (e.g. label ids for a bi-encoder); the runtime never looks inside.
    """

    input_ids: np.ndarray | tuple[int, ...]
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
    # long_text "chunk": how many of `passes` belong to each text chunk, in order (empty otherwise).
    text_chunks: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False)
class ItemPlan:
    """A validated item and its label chunks (one pass each), before its text is tokenized.

    `prepared` is set when the model packs items its own way and was tokenized eagerly.
    """

    item: ClassifyItem
    chunks: tuple[tuple[str, ...], ...]
    prepared: PreparedItem | None = None

    @property
    def num_passes(self) -> int:
        return len(self.prepared.passes) if self.prepared is not None else len(self.chunks)


class Classifier:
    """A loaded GLiClass-family model on one device (see module docstring for the batching contract)."""

    info: ModelInfo
    # Logits relative to the item's other labels (config "relative_scoring"); None: plain logits.
    relative: Any = None

    def __init__(self, network: Any, config: Any, tokenizer: Any, packer: Any, device: str, dtype: Any,
                 model_id: str, label_cache_size: int = 8192) -> None:  # fmt: skip
        from gliclass_core.processing import relative
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
        # Optional: logits relative to the item's other labels (config "relative_scoring").
        self.relative = relative.from_config(getattr(config, "raw", {}) or {})
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
                "calibrated": str(bool(getattr(config, "use_calibrator", False))).lower(),
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
        return self.encode([self.plan(item, index)])[0]

    def prepare_many(self, items: Sequence[ClassifyItem], start: int = 0) -> list[PreparedItem]:
        """Validate and tokenize items (numbered from `start` in errors), texts in one batch call."""
        return self.encode([self.plan(item, start + i) for i, item in enumerate(items)])

    def plan(self, item: ClassifyItem, index: int | None = None) -> ItemPlan:
        """Validate an item and plan its passes without tokenizing its text (cheap, thread-safe).

        Raises InvalidInput naming the field (and `index`). Everything that can reject an item is
        checked here, so `encode` of a plan does not fail on input.
        """
        from gliclass_core.processing.validation import validate_item

        if type(self).prepare is not Classifier.prepare:  # a subclass packing its own way
            return ItemPlan(item, (), prepared=self.prepare(item, index))
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
        return run_forward(self, passes)

    def finish(self, prepared: PreparedItem, logits: Sequence[np.ndarray]) -> Prediction:
        """Turn the logits of an item's passes into scores and predicted labels."""
        from gliclass_core.processing.postprocess import decide

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
        relative = self.relative.apply if self.relative is not None else None
        scores = self._item_scores(prepared, [r[0] for r in rows], relative)
        predicted = decide(labels, scores, item.multi_label, item.threshold, item.top_k)
        by_label = {label: float(s) for label, s in zip(labels, scores)}
        hierarchy = None
        if item.return_hierarchical:
            from gliclass_core.processing.hierarchy import hierarchy_of

            hierarchy = hierarchy_of(item.label_tree, by_label)
        uncalibrated = None
        if calibrated:
            raw = self._item_scores(prepared, [r[1] for r in rows], None)
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

    @staticmethod
    def _item_scores(prepared: PreparedItem, logits: Sequence[np.ndarray], transform: Any) -> np.ndarray:
        """Scores over an item's labels from its passes' 1-D logits (max over text chunks if chunked)."""
        from gliclass_core.processing.postprocess import scores_from_logits

        multi_label = prepared.item.multi_label
        if prepared.text_chunks:
            from gliclass_core.processing.long_text import chunked_scores

            return chunked_scores(prepared.text_chunks, logits, multi_label, transform)
        flat = np.concatenate(logits)
        if transform is not None:
            flat = transform(flat)
        return scores_from_logits(flat, multi_label)

    def finish_many(
        self, prepared: Sequence[PreparedItem], logits: Sequence[Sequence[np.ndarray]]
    ) -> list[Prediction | Exception]:
        """`finish` for many items: one vectorised sigmoid/softmax per label count and mode.

        Returns a Prediction per item, or the exception `finish` would have raised for it.
        """
        from gliclass_core.processing.postprocess import decide_row, scores_matrix

        relative = self.relative
        out: list[Prediction | Exception | None] = [None] * len(prepared)
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, (prep, item_logits) in enumerate(zip(prepared, logits)):
            single = len(prep.passes) == 1 and len(item_logits) == 1 and not prep.text_chunks
            plain = single and np.ndim(item_logits[0]) == 1  # not a calibrated (2, K) pass
            if plain and len(item_logits[0]) == len(prep.item.labels) and not prep.item.return_hierarchical:
                groups.setdefault((len(prep.item.labels), prep.item.multi_label), []).append(i)
            else:
                try:
                    out[i] = self.finish(prep, item_logits)
                except Exception as exc:
                    out[i] = exc
        for (_, multi_label), members in groups.items():
            matrix = np.stack([np.asarray(logits[i][0], dtype=np.float32) for i in members])
            if relative is not None:
                matrix = np.stack([relative.apply(row) for row in matrix])
            for i, row in zip(members, scores_matrix(matrix, multi_label).tolist()):
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
        *,
        long_text: str | LongText = "truncate",
        text_chunk_size: int | None = None,
        text_chunk_overlap: int | None = None,
        labels_chunk_size: int | None = None,
        return_hierarchical: bool = False,
        label_separator: str = ".",
    ) -> list[Prediction]:
        """Classify texts offline (length-sorted batches, input order restored).

        `labels` may also be a nested mapping (or one per text), flattened with `label_separator`
        (`{"sports": ["football"]}` scores "sports.football"); `return_hierarchical` adds the scores
        nested the same way (`Prediction.hierarchy`). `long_text="chunk"` scores long texts in
        overlapping chunks (see `gliclass_core.processing.long_text`) instead of truncating them.
        """
        from gliclass_core.processing.hierarchy import split_labels
        from gliclass_core.processing.long_text import long_text_options

        options = long_text_options(long_text, text_chunk_size, text_chunk_overlap, labels_chunk_size)
        if not isinstance(return_hierarchical, bool):
            raise InvalidInput("must be true or false", field="return_hierarchical")
        trees: list[Any] = []
        if isinstance(labels, Mapping):
            flat, tree = split_labels(labels, label_separator)
            labels, trees = list(flat), [tree]
        elif isinstance(labels, Sequence) and labels and all(isinstance(x, Mapping) for x in labels):
            pairs = [split_labels(x, label_separator, index=i) for i, x in enumerate(labels)]
            labels, trees = [list(f) for f, _ in pairs], [t for _, t in pairs]
        items = build_items(texts, labels, threshold, multi_label, prompt, examples, top_k)
        if options is not TRUNCATE or trees or return_hierarchical:
            items = [
                dataclasses.replace(item, long_text=options, return_hierarchical=return_hierarchical,
                                    label_tree=(trees[i] if len(trees) > 1 else trees[0]) if trees else None)
                for i, item in enumerate(items)
            ]  # fmt: skip
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput("must be a positive integer", field="batch_size")
        plans = [self.plan(item, i) for i, item in enumerate(items)]
        # Items in text-length order, tokenized group by group on a helper thread (the Rust
        # tokenizer releases the GIL) while this thread runs the forward passes of earlier groups.
        order = sorted(range(len(plans)), key=lambda i: len(plans[i].item.text))
        size = max(4 * batch_size, 256)
        groups = [order[g : g + size] for g in range(0, len(order), size)]
        predictions: list[Prediction | Exception | None] = [None] * len(plans)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gliclass-tokenize") as pool:
            encoded = [pool.submit(self.encode, [plans[i] for i in group]) for group in groups]
            for group, future in zip(groups, encoded):
                prepared = future.result()
                for index, result in zip(group, self._forward_sorted(prepared, batch_size)):
                    predictions[index] = result
        for p in predictions:
            if isinstance(p, Exception):
                raise p
        return predictions  # type: ignore[return-value]

    def _forward_sorted(self, prepared: list[PreparedItem], batch_size: int) -> list[Prediction | Exception]:
        flat = [(i, j) for i, p in enumerate(prepared) for j in range(len(p.passes))]
        # Sorting by length keeps padding small; results go back to their item and pass slot.
        flat.sort(key=lambda ij: prepared[ij[0]].passes[ij[1]].num_tokens)
        out: list[list[np.ndarray | None]] = [[None] * len(p.passes) for p in prepared]
        for start in range(0, len(flat), batch_size):
            chunk = flat[start : start + batch_size]
            results = self.forward([prepared[i].passes[j] for i, j in chunk])
            for (i, j), logits in zip(chunk, results):
                out[i][j] = logits
        return self.finish_many(prepared, [[x for x in o if x is not None] for o in out])


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
    from gliclass_core.processing.hierarchy import check_tree
    from gliclass_core.processing.long_text import check_long_text

    check_long_text(item.long_text, index=index)
    check_tree(item, index)


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


__all__ = ["Classifier", "EncodedPass", "ItemPlan", "PreparedItem", "build_items"]
