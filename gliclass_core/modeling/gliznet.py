"""GliZNet: one encoder pass scores a text against all its labels.

Layout `[CLS] text [SEP] label1 [LAB] label2 [LAB] ... labelK [LAB]`. The text vector is the
CLS state through the text projector; label k's vector is the mean of its own tokens after the
label projector (or the `[LAB]` state after it, `label_pooling="lab"`). Projectors are
Linear + LayerNorm (or identities, `use_projection_layernorm=false`). Logit (`similarity_metric`):
cosine(t, l) * exp(clamp(s, -10, 10)) with s learnable (init 2.0), Linear(t * l), or Bilinear(t, l).

A checkpoint is a directory as the authors' code saves it (see `gliznet_format`): `config.json`
(`"model_type": "gliznet"`, `backbone_config`, ...), `model.safetensors` (`backbone.*`,
`aggregator.*`) and the tokenizer files (with `[LAB]` added as a special token).

Integration with `Classifier`: `is_gliznet_config(config_dict)` detects a checkpoint;
`GliZNet.from_pretrained(path, device)` loads it; `GliZNet.pack(text, labels)` returns the
passes of one item (duck-compatible with `EncodedPass`: `input_ids`, `num_labels`, `payload`);
`GliZNet.forward(passes)` returns float32 logits per pass.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gliclass_core.classifier import Classifier, EncodedPass, PreparedItem, check_item_options
from gliclass_core.errors import CheckpointError, InvalidInput
from gliclass_core.modeling.gliznet_format import (
    GLIZNET_MODEL_TYPE,
    LABEL_POOLINGS,  # noqa: F401  (re-exported for callers of this module)
    SIMILARITY_METRICS,  # noqa: F401
    GliZNetConfig,
    legacy_state_dict,
)
from gliclass_core.types import ClassifyItem, ModelInfo

LAB_TOKEN = "[LAB]"
# Labels are tokenized once and reused; bounded so an open-ended label stream cannot grow memory.
LABEL_CACHE_SIZE = 4096
# A pass never squeezes the text below this many tokens to fit more labels; extra labels go to another pass.
MIN_TEXT_TOKENS = 32


def is_gliznet_config(config: Mapping[str, Any]) -> bool:
    """Tell whether a parsed config.json describes a GliZNet checkpoint."""
    return str(config.get("model_type", "")).lower() == GLIZNET_MODEL_TYPE


def _projector(config: GliZNetConfig) -> nn.Module:
    """Linear(H, P) + LayerNorm(P), or the identity when the checkpoint has no projection."""
    if not config.use_projection_layernorm:
        return nn.Identity()
    return nn.Sequential(nn.Linear(config.hidden_size, config.vector_size), nn.LayerNorm(config.vector_size))


class SimilarityHead(nn.Module):
    """Logit of a (text vector, label vector) pair: scaled cosine, a linear map of t*l, or bilinear."""

    def __init__(self, config: GliZNetConfig) -> None:
        super().__init__()
        self.metric = config.similarity_metric
        scale = torch.tensor(float(config.logit_scale_init))
        if config.learn_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        dim = config.vector_size
        if self.metric == "bilinear":
            self.classifier: nn.Module = nn.Bilinear(dim, dim, 1)
        elif self.metric == "dot":
            self.classifier = nn.Linear(dim, 1)

    def forward(self, text: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`text` (B, D), `labels` (B, K, D) -> logits (B, K)."""
        if self.metric == "cosine":
            cosine = torch.einsum("bp,bkp->bk", F.normalize(text, dim=-1), F.normalize(labels, dim=-1))
            return cosine * self.logit_scale.clamp(-10, 10).exp()
        expanded = text.unsqueeze(1).expand_as(labels)
        if self.metric == "dot":
            return self.classifier(expanded * labels).squeeze(-1)  # type: ignore[no-any-return]
        return self.classifier(expanded.contiguous(), labels).squeeze(-1)  # type: ignore[no-any-return]


class Aggregator(nn.Module):
    """The heads, named as in the authors' checkpoints (`aggregator.*`)."""

    def __init__(self, config: GliZNetConfig) -> None:
        super().__init__()
        self.text_projector = _projector(config)
        self.label_projector = _projector(config)
        self.similarity_head = SimilarityHead(config)
        self.dropout = nn.Dropout(config.dropout)


class LossScale(nn.Module):
    """Holds the composite loss's BCE scale (`loss_fn.bce_scale`), so a resumed run keeps it."""

    def __init__(self, init: float) -> None:
        super().__init__()
        self.bce_scale = nn.Parameter(torch.tensor(float(init)))


@dataclass
class GliZNetOutput:
    """Forward results: `logits`/`cosine` are (B, K); `label_mask` marks real label slots."""

    logits: torch.Tensor
    cosine: torch.Tensor
    label_mask: torch.Tensor
    text_embeddings: torch.Tensor
    label_embeddings: torch.Tensor


class GliZNetModel(nn.Module):
    """The torch module: backbone, aggregator (projectors, similarity head), loss scale.

    Parameter names are the authors' (`backbone.*`, `aggregator.*`, `loss_fn.bce_scale`), so a
    state dict moves between their code and ours unchanged.
    """

    def __init__(self, config: GliZNetConfig, encoder: nn.Module | None = None) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        self.config = config
        if encoder is None:
            enc_cfg = AutoConfig.for_model(**config.encoder_config)
            encoder = AutoModel.from_config(enc_cfg)
        self.backbone = encoder
        self.aggregator = Aggregator(config)
        self.loss_fn = LossScale(config.bce_scale_init)

    # Short names the training code and tests use.
    @property
    def encoder(self) -> nn.Module:
        return self.backbone

    @property
    def text_projector(self) -> nn.Module:
        return self.aggregator.text_projector

    @property
    def label_projector(self) -> nn.Module:
        return self.aggregator.label_projector

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.aggregator.similarity_head.logit_scale  # type: ignore[no-any-return]

    @property
    def bce_scale(self) -> nn.Parameter:
        return self.loss_fn.bce_scale

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, label_spans: torch.Tensor
    ) -> GliZNetOutput:
        """Score a padded batch. `label_spans` is (B, K, 2) [start, end) token spans, -1 for empty slots."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        agg = self.aggregator
        text = agg.dropout(agg.text_projector(hidden[:, 0]))
        label_mask = label_spans[..., 0] >= 0
        if self.config.label_pooling == "lab":
            # The [LAB] marker sits right after each label's span.
            lab_pos = label_spans[..., 1].clamp(min=0)
            states = torch.gather(hidden, 1, lab_pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
            labels = agg.label_projector(states)
        else:
            # Project every token, then average each label's own tokens (the authors' order).
            pos = torch.arange(hidden.shape[1], device=hidden.device)
            span = (pos >= label_spans[..., :1]) & (pos < label_spans[..., 1:]) & label_mask.unsqueeze(-1)
            span_f = span.to(hidden.dtype)
            projected = agg.label_projector(hidden)
            labels = torch.einsum("bkt,btp->bkp", span_f, projected) / span_f.sum(-1, keepdim=True).clamp(
                min=1
            )
        labels = agg.dropout(labels)
        cosine = torch.einsum(
            "bp,bkp->bk", F.normalize(text, dim=-1, eps=1e-8), F.normalize(labels, dim=-1, eps=1e-8)
        )
        logits = agg.similarity_head(text, labels)
        return GliZNetOutput(logits, cosine, label_mask, text, labels)


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


class GliZNet:
    """A loaded GliZNet: module, tokenizer and packing, on one device."""

    def __init__(self, model: GliZNetModel, tokenizer: Any, device: str = "cpu") -> None:
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.device = device
        self.config = model.config
        cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if cls_id is None or sep_id is None:
            raise CheckpointError("GliZNet needs a tokenizer with CLS/SEP (or BOS/EOS) tokens")
        self.cls_id, self.sep_id = int(cls_id), int(sep_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self._label_cache: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._cache_lock = threading.Lock()  # prepare() runs on many threads

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    def from_encoder(
        cls,
        encoder_dir: str | Path,
        projected_dim: int | None = None,
        label_pooling: str = "mean",
        device: str = "cpu",
        **config_overrides: Any,
    ) -> GliZNet:
        """Start a new GliZNet from a plain HF encoder directory (heads freshly initialised)."""
        from transformers import AutoModel, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
            encoder = AutoModel.from_pretrained(str(encoder_dir))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load base encoder from {encoder_dir}: {exc}") from exc
        tokenizer.add_special_tokens({"additional_special_tokens": [LAB_TOKEN]})  # as the authors' tokenizer
        old = encoder.get_input_embeddings().weight.shape[0]
        encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        lab_id = tokenizer.convert_tokens_to_ids(LAB_TOKEN)
        assert isinstance(lab_id, int)
        with torch.no_grad():
            emb = encoder.get_input_embeddings().weight
            sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
            # Start [LAB] as a separator-like token rather than random noise.
            emb[old:] = emb[int(sep)] if sep is not None else emb[:old].mean(0)
        enc_cfg = encoder.config.to_dict()
        enc_cfg["vocab_size"] = len(tokenizer)
        config = GliZNetConfig(
            encoder_config=enc_cfg,
            lab_token_id=lab_id,
            projected_dim=projected_dim or int(enc_cfg["hidden_size"]),
            label_pooling=label_pooling,
            max_length=_tokenizer_max_length(tokenizer),
            backbone_model=str(encoder_dir),
            **config_overrides,
        )
        return cls(GliZNetModel(config, encoder=encoder), tokenizer, device)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None
    ) -> GliZNet:
        """Load a GliZNet checkpoint directory (safetensors only)."""
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoTokenizer

        root = Path(path)
        try:
            raw = json.loads((root / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{root}: cannot read config.json: {exc}") from exc
        if not is_gliznet_config(raw):
            raise CheckpointError(f"{root}: not a GliZNet checkpoint (model_type={raw.get('model_type')!r})")
        config = GliZNetConfig.from_dict(raw)
        weights = root / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{root}: model.safetensors is missing")
        try:
            # Pass the encoder's config so transformers does not try to map model_type "gliznet".
            enc_cfg = AutoConfig.for_model(**config.encoder_config)
            tokenizer = AutoTokenizer.from_pretrained(str(root), config=enc_cfg)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{root}: cannot load tokenizer: {exc}") from exc
        lab_id = tokenizer.convert_tokens_to_ids(LAB_TOKEN)
        if not isinstance(lab_id, int) or lab_id == tokenizer.unk_token_id:
            raise CheckpointError(f"{root}: the tokenizer has no {LAB_TOKEN} token")
        if config.lab_token_id < 0:
            config.lab_token_id = lab_id
        elif config.lab_token_id != lab_id:
            raise CheckpointError(f"{root}: tokenizer maps {LAB_TOKEN} to {lab_id}, config.json says "
                                  f"{config.lab_token_id}")  # fmt: skip
        if "max_length" not in raw:  # the authors' tokenizer: its model_max_length, at most 512
            config.max_length = min(config.max_length, _tokenizer_max_length(tokenizer))
        model = GliZNetModel(config)
        state = legacy_state_dict(load_file(str(weights)))
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches: the config describes other heads
            raise CheckpointError(f"{root}: weights do not match config: {exc}") from exc
        # Tied/derived buffers (e.g. position_ids) may legitimately be absent; parameters may not.
        params = {n for n, _ in model.named_parameters()}
        if [k for k in missing if k in params] or unexpected:
            raise CheckpointError(
                f"{root}: weights do not match config (missing {missing}, unexpected {unexpected})"
            )
        model.eval()
        if dtype is not None:
            model.to(dtype)
        return cls(model, tokenizer, device)

    def save_pretrained(self, path: str | Path) -> None:
        """Write config.json, model.safetensors and the tokenizer files."""
        from safetensors.torch import save_file

        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(root / "model.safetensors"), metadata={"format": "pt"})
        self.tokenizer.save_pretrained(str(root))

    # ---- packing (CPU) ------------------------------------------------------------------------------

    def label_ids(self, label: str) -> tuple[int, ...]:
        """Token ids of one label (no special tokens), cached."""
        with self._cache_lock:
            ids = self._label_cache.get(label)
            if ids is not None:
                self._label_cache.move_to_end(label)
                return ids
        ids = tuple(self.tokenizer(label, add_special_tokens=False)["input_ids"])
        with self._cache_lock:
            self._label_cache[label] = ids
            if len(self._label_cache) > LABEL_CACHE_SIZE:
                self._label_cache.popitem(last=False)
        return ids

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

    def collate(self, passes: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Pad passes into tensors on this model's device."""
        width = max(len(p.input_ids) for p in passes)
        max_k = max(p.num_labels for p in passes)
        ids = torch.full((len(passes), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(passes), width), dtype=torch.long)
        spans = torch.full((len(passes), max_k, 2), -1, dtype=torch.long)
        for row, p in enumerate(passes):
            n = len(p.input_ids)
            ids[row, :n] = torch.tensor(p.input_ids, dtype=torch.long)
            mask[row, :n] = 1
            if p.num_labels:
                spans[row, : p.num_labels] = torch.tensor(p.payload, dtype=torch.long)
        return {
            "input_ids": ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "label_spans": spans.to(self.device),
        }

    # ---- inference ----------------------------------------------------------------------------------

    @torch.inference_mode()
    def forward(self, passes: Sequence[Any]) -> list[np.ndarray]:
        """One padded forward pass; float32 logits (length `num_labels`) per pass."""
        if not passes:
            return []
        out = self.model(**self.collate(passes))
        logits = out.logits.float().cpu().numpy()
        return [logits[i, : p.num_labels].copy() for i, p in enumerate(passes)]

    def scores(
        self, texts: Sequence[str], labels: Sequence[str], multi_label: bool = True, batch_size: int = 16
    ) -> np.ndarray:
        """Score every text against the same labels: (N, K) probabilities (sigmoid or softmax)."""
        self.model.eval()
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), batch_size):
            items = [self.pack(t, labels) for t in texts[start : start + batch_size]]
            flat = [p for passes in items for p in passes]
            logits = self.forward(flat)
            pos = 0
            for passes in items:
                rows.append(np.concatenate(logits[pos : pos + len(passes)]))
                pos += len(passes)
        logits_all = np.stack(rows) if rows else np.zeros((0, len(labels)), dtype=np.float32)
        return activate(logits_all, multi_label)


def _tokenizer_max_length(tokenizer: Any) -> int:
    """The authors' rule: the tokenizer's model_max_length, at most 512 (and 512 when it is unset)."""
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    return 512 if limit <= 0 or limit > 100_000 else min(limit, 512)


def activate(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Sigmoid (multi-label) or softmax over the last axis (single-label)."""
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def is_gliznet_dir(directory: str | Path) -> bool:
    """Tell whether a checkpoint directory holds a GliZNet model (reads only config.json)."""
    try:
        raw = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and is_gliznet_config(raw)


class GliZNetClassifier(Classifier):
    """`Classifier` for GliZNet checkpoints: same prepare/forward/finish contract, so the runtime,
    gRPC and Kafka edges serve it unchanged. `finish` and `classify` are inherited."""

    def __init__(self, net: GliZNet, model_id: str, dtype: Any) -> None:
        # The base __init__ wires a GLiClass packer/config; GliZNet brings its own.
        self.net = net
        self.model_id = model_id
        self.device = net.device
        self.dtype = dtype
        self.info = ModelInfo(
            model_id=model_id,
            architecture="gliznet",
            device=net.device,
            dtype=str(dtype).removeprefix("torch."),
            max_length=net.config.max_length,
            max_labels=1000,
            extra={
                "label_pooling": net.config.label_pooling,
                "similarity": net.config.similarity_metric,
                "encoder": str(net.config.encoder_config.get("model_type")),
            },
        )

    @classmethod
    def load(
        cls, directory: str | Path, model_id: str, device: str = "auto", dtype: str | None = None
    ) -> GliZNetClassifier:
        """Load a GliZNet checkpoint directory onto `device` (auto: CUDA when present)."""
        from gliclass_core.classifier import _resolve_device, _resolve_dtype

        dev = _resolve_device(device)
        torch_dtype = _resolve_dtype(dtype, dev)
        return cls(GliZNet.from_pretrained(directory, device=dev, dtype=torch_dtype), model_id, torch_dtype)

    def replicate(self, device: str) -> GliZNetClassifier:
        """Return a copy on `device`, sharing the tokenizer."""
        from gliclass_core.classifier import _resolve_device

        dev = _resolve_device(device)
        model = self.net.model if dev == self.device else copy.deepcopy(self.net.model)
        return GliZNetClassifier(GliZNet(model, self.net.tokenizer, dev), self.model_id, self.dtype)

    def prepare(self, item: ClassifyItem, index: int | None = None) -> PreparedItem:
        """Validate and pack one item (labels that do not fit one pass go to further passes)."""
        from gliclass_core.processing.validation import validate_item

        validate_item(item, index)
        check_item_options(item, index)
        if item.long_text.mode == "chunk":
            from gliclass_core.processing.long_text import prepare_chunked

            return prepare_chunked(self.prepare, item, index)  # type: ignore[no-any-return]
        if item.examples:
            raise InvalidInput(
                "in-context examples are not supported by GliZNet models", field="examples", index=index
            )
        # [LAB] in the input would be read as a label boundary.
        for name, values in (("text", [item.text]), ("labels", item.labels), ("prompt", [item.prompt or ""])):
            if any(LAB_TOKEN in v for v in values):
                raise InvalidInput(
                    f"must not contain the reserved marker {LAB_TOKEN}", field=name, index=index
                )
        try:
            packed = self.net.pack(item.text, list(item.labels), item.prompt)
        except InvalidInput as exc:
            raise InvalidInput(exc.bare_message, field=exc.field, index=index) from exc
        passes = tuple(EncodedPass(p.input_ids, p.num_labels, p) for p in packed)
        return PreparedItem(item=item, passes=passes, truncated=any(p.truncated for p in packed))

    def forward(self, passes: Sequence[EncodedPass]) -> list[np.ndarray]:
        """One padded forward pass; float32 logits per pass."""
        return self.net.forward([p.payload for p in passes])
