"""GliZNet: one encoder pass scores a text against all its labels.

Layout `[CLS] text [SEP] label1 [LAB] label2 [LAB] ... labelK [LAB]`. The text vector is the
CLS state through the text projector; label k's vector is the mean of its own tokens after the
label projector (or the `[LAB]` state after it, `label_pooling="lab"`). Projectors are
Linear + LayerNorm (or identities, `use_projection_layernorm=false`). Logit (`similarity_metric`):
cosine(t, l) * exp(clamp(s, -10, 10)) with s learnable (init 2.0), Linear(t * l), or Bilinear(t, l).

A checkpoint is a directory as the authors' code saves it (see `gliznet_format`): `config.json`
(`"model_type": "gliznet"`, `backbone_config`, ...), `model.safetensors` (`backbone.*`,
`aggregator.*`) and the tokenizer files (with `[LAB]` added as a special token).

Packing lives in `gliclass_core.processing.gliznet_packing`, padding in `modeling.collate`, and
the model contract (`gliclass_core.model.Model`) in `gliclass_core.gliznet_classifier`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gliclass_core.errors import CheckpointError
from gliclass_core.modeling.collate import pad_rows, pad_spans
from gliclass_core.modeling.gliznet_format import GliZNetConfig, is_gliznet_config, legacy_state_dict
from gliclass_core.processing.gliznet_packing import LAB_TOKEN, GliZNetPacker, GliZNetPass
from gliclass_core.processing.postprocess import scores_from_logits


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


class GliZNet:
    """A loaded GliZNet: module, tokenizer and packer, on one device."""

    def __init__(self, model: GliZNetModel, tokenizer: Any, device: str = "cpu") -> None:
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.device = device
        self.config = model.config
        self.packer = GliZNetPacker(tokenizer, model.config)
        self.cls_id, self.sep_id = self.packer.cls_id, self.packer.sep_id
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

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

    # ---- packing (CPU) and padding ------------------------------------------------------------------

    def pack(
        self, text: str, labels: Sequence[str], prompt: str | None = None, max_passes: int | None = None
    ) -> list[GliZNetPass]:
        """Pack one item into passes (see `GliZNetPacker.pack`)."""
        return self.packer.pack(text, labels, prompt, max_passes)

    def collate(self, passes: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Pad passes into tensors on this model's device."""
        ids, mask = pad_rows([p.input_ids for p in passes], self.pad_id, self.device)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "label_spans": pad_spans([p.payload[: p.num_labels] for p in passes], self.device),
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
        return scores_from_logits(logits_all, multi_label)


def _tokenizer_max_length(tokenizer: Any) -> int:
    """The authors' rule: the tokenizer's model_max_length, at most 512 (and 512 when it is unset)."""
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    return 512 if limit <= 0 or limit > 100_000 else min(limit, 512)
