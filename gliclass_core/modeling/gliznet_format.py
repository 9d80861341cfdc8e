"""GliZNet checkpoint format: `config.json` as the authors' code writes it, and our earlier layout.

The authors' code (KameniAlexNea/zero-shot-classification, `gliznet/model.py`) saves a
`GliZNetConfig` (`model_type "gliznet"`) with `backbone_config` (the encoder's own config),
`projected_dim`, `similarity_metric` (cosine | dot | bilinear), `use_projection_layernorm`,
`use_lab_token_for_labels`, `lab_token_id`, `dropout_rate`, `logit_scale_init`,
`learn_temperature` and its loss weights; weights under `backbone.*`, `aggregator.*` and
`loss_fn.bce_scale`. That is the format we read and write.

Checkpoints this project wrote before (`encoder_config`, `label_pooling`, weights under
`encoder.*`, `text_projector.linear.*` ...) still load: `legacy_state_dict` renames their weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from gliclass_core.errors import CheckpointError
from gliclass_core.modeling.positions import usable_positions

GLIZNET_MODEL_TYPE = "gliznet"
LABEL_POOLINGS = ("mean", "lab")
SIMILARITY_METRICS = ("cosine", "dot", "bilinear")
DEFAULT_MAX_LENGTH = 512


def is_gliznet_config(config: Mapping[str, Any]) -> bool:
    """Tell whether a parsed config.json describes a GliZNet checkpoint."""
    return str(config.get("model_type", "")).lower() == GLIZNET_MODEL_TYPE


def is_gliznet_dir(directory: str | Path) -> bool:
    """Tell whether a checkpoint directory holds a GliZNet model (reads only config.json)."""
    try:
        raw = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and is_gliznet_config(raw)


@dataclass
class GliZNetConfig:
    """Everything `config.json` records about a GliZNet model (plus our loss settings).

    `encoder_config` is the authors' `backbone_config`; `label_pooling` "lab" is their
    `use_lab_token_for_labels`; `ce_weight` / `repulsion_weight` / `bce_weight` are their
    `supcon_loss_weight` / `label_repulsion_weight` / `bce_loss_weight`.
    """

    encoder_config: dict[str, Any]
    lab_token_id: int
    projected_dim: int | None = None
    label_pooling: str = "mean"
    similarity_metric: str = "cosine"
    use_projection_layernorm: bool = True
    learn_temperature: bool = True
    logit_scale_init: float = 2.0
    bce_scale_init: float = 5.0
    dropout: float = 0.1
    max_length: int = DEFAULT_MAX_LENGTH
    ce_weight: float = 1.0
    repulsion_weight: float = 0.1
    bce_weight: float = 1.0
    repulsion_threshold: float = 0.3
    backbone_model: str = ""
    model_type: str = GLIZNET_MODEL_TYPE
    architectures: list[str] = field(default_factory=lambda: ["GliZNetForSequenceClassification"])

    def __post_init__(self) -> None:
        if self.label_pooling not in LABEL_POOLINGS:
            raise CheckpointError(
                f"GliZNet label_pooling must be one of {LABEL_POOLINGS}, got {self.label_pooling!r}"
            )
        if self.similarity_metric not in SIMILARITY_METRICS:
            raise CheckpointError(
                f"GliZNet similarity_metric must be one of {SIMILARITY_METRICS}, "
                f"got {self.similarity_metric!r}"
            )
        if not isinstance(self.encoder_config, Mapping) or "model_type" not in self.encoder_config:
            raise CheckpointError("GliZNet backbone_config must be a table with the encoder's model_type")
        hidden = int(self.encoder_config["hidden_size"])
        if not self.use_projection_layernorm and self.projected_dim not in (None, hidden):
            # The authors' projectors are identities then: vectors keep the encoder's width.
            raise CheckpointError(
                f"GliZNet projected_dim {self.projected_dim} needs use_projection_layernorm=true "
                f"(without it the projectors are identities of width {hidden})"
            )
        limit = usable_positions(self.encoder_config)
        if limit:
            self.max_length = min(self.max_length, limit)

    @property
    def hidden_size(self) -> int:
        return int(self.encoder_config["hidden_size"])

    @property
    def vector_size(self) -> int:
        """Width of the text and label vectors (the similarity head's input)."""
        if not self.use_projection_layernorm:
            return self.hidden_size
        return int(self.projected_dim or self.hidden_size)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GliZNetConfig:
        """Build from a parsed config.json: the authors' format, or this project's earlier one."""
        if "backbone_config" in data:
            return cls._from_authors(data)
        if "encoder_config" in data:
            known = {f.name for f in fields(cls)}
            legacy = {
                k: v for k, v in data.items() if k in known and k not in ("model_type", "architectures")
            }
            try:
                return cls(**legacy)
            except TypeError as exc:
                raise CheckpointError(f"GliZNet config.json is incomplete: {exc}") from exc
        raise CheckpointError("GliZNet config.json is incomplete: it has no 'backbone_config'")

    @classmethod
    def _from_authors(cls, data: Mapping[str, Any]) -> GliZNetConfig:
        backbone = data["backbone_config"]
        if not isinstance(backbone, Mapping):
            raise CheckpointError("GliZNet backbone_config must be a table")
        lab = data.get("lab_token_id")
        values: dict[str, Any] = {
            "encoder_config": dict(backbone),
            "lab_token_id": -1 if lab is None else lab,  # resolved from the tokenizer at load
            "projected_dim": data.get("projected_dim"),
            "label_pooling": "lab" if data.get("use_lab_token_for_labels") else "mean",
            "similarity_metric": data.get("similarity_metric", "cosine"),
            # The authors' defaults when a key is absent: no projection, learned temperature.
            "use_projection_layernorm": bool(data.get("use_projection_layernorm", False)),
            "learn_temperature": bool(data.get("learn_temperature", True)),
            "logit_scale_init": float(data.get("logit_scale_init", 2.0)),
            "dropout": float(data.get("dropout_rate", 0.1)),
            "ce_weight": float(data.get("supcon_loss_weight", 1.0)),
            "repulsion_weight": float(data.get("label_repulsion_weight", 0.1)),
            "bce_weight": float(data.get("bce_loss_weight", 1.0)),
            "repulsion_threshold": float(data.get("repulsion_threshold", 0.3)),
            "backbone_model": str(data.get("backbone_model") or ""),
        }
        for ours in ("bce_scale_init", "max_length"):
            if ours in data:
                values[ours] = data[ours]
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """config.json in the authors' format (their code loads it), plus our own training keys."""
        return {
            "model_type": GLIZNET_MODEL_TYPE,
            "architectures": ["GliZNetForSequenceClassification"],
            "backbone_model": self.backbone_model or str(self.encoder_config.get("_name_or_path", "")),
            "backbone_config": dict(self.encoder_config),
            "projected_dim": self.projected_dim,
            "similarity_metric": self.similarity_metric,
            "dropout_rate": self.dropout,
            "use_projection_layernorm": self.use_projection_layernorm,
            "use_lab_token_for_labels": self.label_pooling == "lab",
            "lab_token_id": self.lab_token_id,
            "bce_loss_weight": self.bce_weight,
            "supcon_loss_weight": self.ce_weight,
            "label_repulsion_weight": self.repulsion_weight,
            "logit_scale_init": self.logit_scale_init,
            "learn_temperature": self.learn_temperature,
            "repulsion_threshold": self.repulsion_threshold,
            "bce_scale_init": self.bce_scale_init,
            "max_length": self.max_length,
        }


# Our earlier weight names -> the authors' (which the module now uses).
_LEGACY_PREFIXES = (
    ("encoder.", "backbone."),
    ("text_projector.linear.", "aggregator.text_projector.0."),
    ("text_projector.norm.", "aggregator.text_projector.1."),
    ("label_projector.linear.", "aggregator.label_projector.0."),
    ("label_projector.norm.", "aggregator.label_projector.1."),
)
_LEGACY_NAMES = {"logit_scale": "aggregator.similarity_head.logit_scale", "bce_scale": "loss_fn.bce_scale"}


def legacy_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the weights of a checkpoint in this project's earlier layout; others pass unchanged."""
    if any(k.startswith(("backbone.", "aggregator.")) for k in state):
        return dict(state)
    out = {}
    for key, value in state.items():
        new = _LEGACY_NAMES.get(key, key)
        for old, prefix in _LEGACY_PREFIXES:
            if key.startswith(old):
                new = prefix + key[len(old) :]
                break
        out[new] = value
    return out
