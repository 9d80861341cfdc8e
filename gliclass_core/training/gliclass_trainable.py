"""GLiClass (uni-encoder / bi-encoder) as a `Trainable`, built on the core's `GLiClassNetwork`.

Training needs logits with grad, so this module packs batches itself (same layout as the
reference: `<<LABEL>>l1<<LABEL>>l2...<<SEP>>` before or after the text; bi-encoder: text and
each label encoded alone) and calls the network's `uni_logits` / `bi_logits` directly.
Checkpoints are written in the reference layout: config.json (`model_type` "GLiClass"),
model.safetensors with keys prefixed `model.`, and the tokenizer files.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gliclass_core.errors import UnsupportedModel
from gliclass_core.modeling.config import parse_config
from gliclass_core.modeling.heads import GLiClassNetwork, MarkerBatch
from gliclass_core.processing.relative import from_config as relative_from_config
from gliclass_core.training.datasets import LabelledExample
from gliclass_core.training.losses import focal_loss

DEFAULT_MAX_LENGTH = 512


class GLiClassTrainable:
    """Adapts a GLiClass network + tokenizer + raw config to the training loop."""

    def __init__(
        self,
        network: GLiClassNetwork,
        tokenizer: Any,
        raw_config: dict[str, Any],
        alpha: float = 0.5,
        gamma: float = 2.0,
    ) -> None:
        self.cfg = parse_config(raw_config)
        if self.cfg.architecture not in ("uni-encoder", "bi-encoder"):
            raise UnsupportedModel(
                f"training {self.cfg.architecture!r} is not supported (uni-encoder, bi-encoder)"
            )
        self.network = network
        self.module: nn.Module = network
        # Typed views of the network's sub-modules (nn.Module.__getattr__ is untyped).
        self._encoders: list[nn.Module] = [network.encoder_model]
        if self.cfg.is_bi_encoder:
            self._encoders.append(network.label_encoder)
        self.tokenizer = tokenizer
        self.raw_config = copy.deepcopy(raw_config)
        self.alpha, self.gamma = alpha, gamma
        self.max_length = min(DEFAULT_MAX_LENGTH, self.cfg.max_position_embeddings or DEFAULT_MAX_LENGTH)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self._label_cache: dict[str, list[int]] = {}
        # Logits relative to the row's other labels (config "relative_scoring"), as at inference.
        self.relative = relative_from_config(self.cfg.raw)

    @classmethod
    def from_pretrained(cls, source: str, alpha: float = 0.5, gamma: float = 2.0) -> GLiClassTrainable:
        """Load `builtin:minilm`, a checkpoint directory or a hub id for training."""
        from gliclass_core.modeling.loading import load_network, load_tokenizer, read_config, resolve_source

        directory = resolve_source(source)
        cfg = read_config(directory)
        network = load_network(directory, cfg)
        return cls(network, load_tokenizer(directory, cfg), cfg.raw, alpha, gamma)

    # ---- Trainable -----------------------------------------------------------------------------------

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        enc = [p for m in self._encoders for p in m.parameters()]
        ids = {id(p) for p in enc}
        return enc, [p for p in self.network.parameters() if id(p) not in ids]

    def logits(
        self, texts: Sequence[str], labels: Sequence[Sequence[str]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, K) with grad and the real-slot mask (B, K)."""
        device = self.network.logit_scale.device
        k = max(len(lbls) for lbls in labels)
        label_mask = torch.zeros(len(texts), k, dtype=torch.bool)
        for r, lbls in enumerate(labels):
            label_mask[r, : len(lbls)] = True
        if self.cfg.architecture == "uni-encoder":
            rows = [self._uni_ids(t, lbls) for t, lbls in zip(texts, labels)]
            ids, mask = self._pad([r[0] for r in rows])
            markers = torch.zeros(len(rows), k, dtype=torch.long)
            for r, (_, pos, _) in enumerate(rows):
                markers[r, : len(pos)] = torch.tensor(pos)
            mb = MarkerBatch(
                markers.to(device),
                label_mask.to(device),
                torch.tensor([r[2] for r in rows], device=device),
                mask.sum(1).to(device),
            )
            out = self.network.uni_logits(ids.to(device), mask.to(device), mb)
        else:
            unique = sorted({lbl for lbls in labels for lbl in lbls})
            lab_ids, lab_mask = self._pad([self._encode(lbl, special=True) for lbl in unique])
            vectors = self.network.label_vectors(lab_ids.to(device), lab_mask.to(device))
            index = {lbl: i for i, lbl in enumerate(unique)}
            gather = torch.zeros(len(texts), k, dtype=torch.long)
            for r, lbls in enumerate(labels):
                gather[r, : len(lbls)] = torch.tensor([index[lbl] for lbl in lbls])
            per_row = vectors[gather.to(device)] * label_mask.to(device).unsqueeze(-1).to(vectors.dtype)
            ids, mask = self._pad([self._encode(t, special=True, limit=self.max_length) for t in texts])
            out = self.network.bi_logits(ids.to(device), mask.to(device), per_row, label_mask.to(device))
        bias = getattr(self.cfg, "logit_bias", 0.0)  # a config-level offset (builtin:minilm), as at inference
        out = out + bias if bias else out
        if self.relative is not None:
            out = self.relative.apply_torch(out, label_mask.to(device))
        return out, label_mask.to(device)

    def compute_loss(self, batch: Sequence[LabelledExample]) -> tuple[torch.Tensor, dict[str, float]]:
        logits, mask = self.logits([e.text for e in batch], [e.labels for e in batch])
        targets = torch.zeros_like(logits)
        for r, e in enumerate(batch):
            targets[r, : len(e.targets)] = torch.tensor(e.targets, dtype=logits.dtype)
        loss = focal_loss(logits, targets, mask, self.alpha, self.gamma)
        return loss, {"focal": float(loss.detach())}

    @torch.inference_mode()
    def predict(
        self, texts: Sequence[str], labels: Sequence[Sequence[str]], multi_label: bool = True
    ) -> list[dict[str, float]]:
        self.network.eval()
        logits, mask = self.logits(texts, labels)
        logits = logits.float().masked_fill(~mask, float("-inf"))
        probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
        return [{lbl: float(p) for lbl, p in zip(lbls, row.tolist())} for lbls, row in zip(labels, probs)]

    def save(self, path: str | Path) -> None:
        """Write the checkpoint in the reference layout (loads in `gliclass` and in our server)."""
        from safetensors.torch import save_file

        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.json").write_text(json.dumps(self.raw_config, indent=2))
        state = {
            f"model.{k}": v.detach().to("cpu").contiguous() for k, v in self.network.state_dict().items()
        }
        save_file(state, str(root / "model.safetensors"), metadata={"format": "pt"})
        self.tokenizer.save_pretrained(str(root))

    # ---- packing -------------------------------------------------------------------------------------

    def _encode(self, text: str, special: bool = False, limit: int | None = None) -> list[int]:
        if not special:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(text, truncation=True, max_length=limit or self.max_length)["input_ids"])

    def _label_ids(self, label: str) -> list[int]:
        if label not in self._label_cache:
            if len(self._label_cache) > 4096:  # bounded: label vocabularies can be open-ended
                self._label_cache.clear()
            self._label_cache[label] = self._encode(label)
        return self._label_cache[label]

    def _uni_ids(self, text: str, labels: Sequence[str]) -> tuple[list[int], list[int], int]:
        """Ids, <<LABEL>> positions and the first <<SEP>> position; the text is cut, never the labels."""
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        if cls_id is None:
            cls_id, sep_id = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        prompt: list[int] = []
        for lbl in labels:
            prompt += [self.cfg.class_token_index, *self._label_ids(lbl)]
        prompt.append(self.cfg.text_token_index)
        text_ids = self._encode(text)[: max(0, self.max_length - 2 - len(prompt))]
        body = prompt + text_ids if self.cfg.prompt_first else text_ids + prompt
        ids = [cls_id, *body, sep_id]
        markers = [i for i, t in enumerate(ids) if t == self.cfg.class_token_index]
        return ids, markers, ids.index(self.cfg.text_token_index)

    def _pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask
