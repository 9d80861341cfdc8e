"""Parse and validate a GLiClass checkpoint's `config.json` into the fields our heads need."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gliclass_core.errors import CheckpointError, UnsupportedModel

ARCHITECTURES = ("uni-encoder", "bi-encoder", "bi-encoder-fused")
POOLINGS = ("first", "last", "avg", "max", "sum", "rms", "abs_max", "abs_avg")
SCORERS = ("simple", "weighted-dot", "mlp", "hopfield")
CLASS_TOKEN_POOLINGS = ("first", "average")
# Options the reference can train with that change the forward pass; we refuse them rather than
# silently computing something else.
UNSUPPORTED_FLAGS = ("use_lstm", "squeeze_layers", "layer_wise", "use_segment_embeddings", "use_calibrator")


@dataclass(frozen=True)
class GLiClassConfig:
    """The subset of a GLiClass `config.json` that defines inference."""

    architecture: str
    pooling: str
    scorer: str
    class_token_pooling: str
    embed_class_token: bool
    extract_text_features: bool
    normalize_features: bool
    prompt_first: bool
    class_token_index: int
    text_token_index: int
    example_token_index: int
    hidden_size: int
    projector_act: str
    encoder_config: dict[str, Any]
    label_model_config: dict[str, Any] | None
    encoder_layer_id: int = -1
    # Our extension (the reference ignores it): a constant added to every logit, so a cosine-scored
    # model can put its decision boundary at probability 0.5. The builtin model sets it.
    logit_bias: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def uses_markers(self) -> bool:
        """Whether the text encoder's input carries `<<LABEL>>` markers."""
        return self.architecture in ("uni-encoder", "bi-encoder-fused")

    @property
    def is_bi_encoder(self) -> bool:
        return self.architecture.startswith("bi-encoder")

    @property
    def max_position_embeddings(self) -> int | None:
        value = self.encoder_config.get("max_position_embeddings")
        return int(value) if isinstance(value, int) and value > 0 else None


def parse_config(raw: dict[str, Any]) -> GLiClassConfig:
    """Validate a GLiClass config dict; raise UnsupportedModel naming what we cannot run."""
    if not isinstance(raw, dict):
        raise CheckpointError("config.json: expected a JSON object")
    model_type = raw.get("model_type")
    if model_type not in ("GLiClass", "gliclass"):
        raise UnsupportedModel(f"config.json: model_type {model_type!r} is not a GLiClass model")
    arch = raw.get("architecture_type", "uni-encoder")
    if arch not in ARCHITECTURES:
        raise UnsupportedModel(
            f"architecture_type {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})"
        )
    pooling = raw.get("pooling_strategy", "first")
    if pooling not in POOLINGS:
        raise UnsupportedModel(
            f"pooling_strategy {pooling!r} is not supported (supported: {', '.join(POOLINGS)})"
        )
    scorer = raw.get("scorer_type", "simple")
    if scorer not in SCORERS:
        raise UnsupportedModel(f"scorer_type {scorer!r} is not supported (supported: {', '.join(SCORERS)})")
    ctp = raw.get("class_token_pooling", "first")
    if ctp not in CLASS_TOKEN_POOLINGS:
        raise UnsupportedModel(f"class_token_pooling {ctp!r} is not supported")
    for flag in UNSUPPORTED_FLAGS:
        if raw.get(flag):
            raise UnsupportedModel(f"config option {flag}=true is not supported")
    if raw.get("multimodal"):
        raise UnsupportedModel("multimodal GLiClass models are not supported")
    enc = raw.get("encoder_config")
    if not isinstance(enc, dict) or not isinstance(enc.get("model_type"), str):
        raise CheckpointError("config.json: 'encoder_config' with a 'model_type' is required")
    if enc.get("is_decoder") or enc.get("is_encoder_decoder"):
        raise UnsupportedModel(f"encoder {enc['model_type']!r} is a decoder / encoder-decoder model")
    label_cfg = raw.get("label_model_config")
    if arch.startswith("bi-encoder") and not isinstance(label_cfg, dict):
        raise CheckpointError("config.json: a bi-encoder needs 'label_model_config'")
    vocab = enc.get("vocab_size")
    hidden = raw.get("hidden_size") or enc.get("hidden_size")
    if not isinstance(hidden, int):
        raise CheckpointError("config.json: 'hidden_size' is missing")

    def index(key: str, offset: int) -> int:
        value = raw.get(key, -1)
        if not isinstance(value, int):
            raise CheckpointError(f"config.json: '{key}' must be an integer")
        if value == -1 and isinstance(vocab, int):
            return vocab + offset
        return value

    return GLiClassConfig(
        architecture=arch,
        pooling=pooling,
        scorer=scorer,
        class_token_pooling=ctp,
        embed_class_token=bool(raw.get("embed_class_token", True)),
        extract_text_features=bool(raw.get("extract_text_features", False)),
        normalize_features=bool(raw.get("normalize_features", False)),
        prompt_first=bool(raw.get("prompt_first", False)),
        class_token_index=index("class_token_index", 0),
        text_token_index=index("text_token_index", 1),
        example_token_index=index("example_token_index", 2),
        hidden_size=hidden,
        projector_act=str(raw.get("projector_hidden_act", "gelu")),
        encoder_config=enc,
        label_model_config=label_cfg if isinstance(label_cfg, dict) else None,
        encoder_layer_id=int(raw.get("encoder_layer_id", -1)),
        logit_bias=float(raw.get("logit_bias", 0.0) or 0.0),
        raw=raw,
    )
