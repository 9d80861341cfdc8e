"""Parse and validate a GLiClass checkpoint's `config.json` into the fields our heads need."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gliclass_core.errors import CheckpointError, UnsupportedModel

ARCHITECTURES = ("uni-encoder", "bi-encoder", "bi-encoder-fused", "encoder-decoder", "encoder-decoder-cls")
ENCODER_DECODERS = ("encoder-decoder", "encoder-decoder-cls")
POOLINGS = ("first", "last", "avg", "max", "sum", "rms", "abs_max", "abs_avg")
# "pass" keeps every text token state: only the cross-attn scorer reads it.
TEXT_POOLINGS = (*POOLINGS, "pass")
SCORERS = ("simple", "weighted-dot", "mlp", "hopfield", "cross-attn")
CLASS_TOKEN_POOLINGS = ("first", "average")
# Why the reference's own code cannot run a squeeze-excitation mix of all layers (see parse_config).
SQUEEZE_REFUSAL = (
    "squeeze_layers=true with encoder_layer_id=-1 is not supported: the reference gliclass (every "
    "version since the option appeared in July 2024, 0.1.21 included) sizes its layer attention for "
    "num_hidden_layers inputs but feeds it num_hidden_layers + 1 hidden states (embeddings included), "
    "so it cannot run such a checkpoint either and there are no reference scores to match"
)


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
    # Options beyond the basic heads (see docs in README "Supported options").
    use_lstm: bool = False
    use_segment_embeddings: bool = False
    scorer_num_heads: int = 16
    scorer_mlp_hidden_size: int = 1024
    use_calibrator: bool = False
    calibrator_hidden_size: int = 256
    calibrator_beta_max: float = 3.0
    calibrator_use_bias: bool = False
    # Our extension (the reference ignores it): a constant added to every logit, so a cosine-scored
    # model can put its decision boundary at probability 0.5. The builtin model sets it.
    logit_bias: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def uses_markers(self) -> bool:
        """Whether the model reads `<<LABEL>>` markers (in the text's row, or in its own label prompt)."""
        return self.architecture != "bi-encoder"

    @property
    def is_encoder_decoder(self) -> bool:
        """T5-style: text and label prompt in separate sequences, one through each stack."""
        return self.architecture in ENCODER_DECODERS

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
    if raw.get("auto_map"):
        raise UnsupportedModel(
            "config.json names its own modelling code (auto_map): the checkpoint needs trust_remote_code, "
            "and custom code is never run"
        )
    arch = raw.get("architecture_type", "uni-encoder")
    if arch not in ARCHITECTURES:
        raise UnsupportedModel(
            f"architecture_type {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})"
        )
    pooling = raw.get("pooling_strategy", "first")
    if pooling not in TEXT_POOLINGS:
        raise UnsupportedModel(
            f"pooling_strategy {pooling!r} is not supported (supported: {', '.join(TEXT_POOLINGS)})"
        )
    scorer = raw.get("scorer_type", "simple")
    if scorer not in SCORERS:
        raise UnsupportedModel(f"scorer_type {scorer!r} is not supported (supported: {', '.join(SCORERS)})")
    ctp = raw.get("class_token_pooling", "first")
    if ctp not in CLASS_TOKEN_POOLINGS:
        raise UnsupportedModel(f"class_token_pooling {ctp!r} is not supported")
    _check_combinations(raw, arch, pooling, scorer)
    enc = raw.get("encoder_config")
    if not isinstance(enc, dict) or not isinstance(enc.get("model_type"), str):
        raise CheckpointError("config.json: 'encoder_config' with a 'model_type' is required")
    from gliclass_core.modeling.encoder import refuse_wrong_attention

    if arch in ENCODER_DECODERS:
        if not enc.get("is_encoder_decoder"):
            raise UnsupportedModel(f"architecture_type {arch!r} needs an encoder-decoder encoder_config")
        if raw.get("use_lstm"):
            raise UnsupportedModel(f"use_lstm with architecture_type {arch!r} is not supported")
    else:
        refuse_wrong_attention(enc)
    label_cfg = raw.get("label_model_config")
    if arch.startswith("bi-encoder") and isinstance(label_cfg, dict):
        refuse_wrong_attention(label_cfg)
    if arch.startswith("bi-encoder") and not isinstance(label_cfg, dict):
        raise CheckpointError("config.json: a bi-encoder needs 'label_model_config'")
    layer_id = raw.get("encoder_layer_id", -1)
    layers = enc.get("num_hidden_layers")
    if isinstance(layer_id, int) and isinstance(layers, int) and not -(layers + 1) <= layer_id <= layers:
        raise CheckpointError(
            f"config.json: encoder_layer_id {layer_id} is outside the encoder's {layers + 1} hidden states"
        )
    vocab = enc.get("vocab_size")
    hidden = raw.get("hidden_size") or enc.get("hidden_size") or enc.get("d_model")
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
        # Only the uni-encoder reads a chosen layer; the reference's other architectures ignore it.
        encoder_layer_id=_int(raw, "encoder_layer_id", -1) if arch == "uni-encoder" else -1,
        use_lstm=bool(raw.get("use_lstm")) and arch == "uni-encoder",
        use_segment_embeddings=bool(raw.get("use_segment_embeddings")) and arch == "uni-encoder",
        scorer_num_heads=_int(raw, "scorer_num_heads", 16),
        scorer_mlp_hidden_size=_int(raw, "scorer_mlp_hidden_size", 1024),
        use_calibrator=bool(raw.get("use_calibrator")),
        calibrator_hidden_size=_int(raw, "calibrator_hidden_size", 256),
        calibrator_beta_max=float(raw.get("calibrator_beta_max", 3.0)),
        calibrator_use_bias=bool(raw.get("calibrator_use_bias")),
        logit_bias=float(raw.get("logit_bias", 0.0) or 0.0),
        raw=raw,
    )


def _int(raw: dict[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"config.json: '{key}' must be an integer, got {value!r}")
    return value


def _check_combinations(raw: dict[str, Any], arch: str, pooling: str, scorer: str) -> None:
    """Refuse option combinations the reference cannot run (so there is nothing to match)."""
    if (scorer == "cross-attn") != (pooling == "pass"):
        raise UnsupportedModel(
            f"scorer_type {scorer!r} with pooling_strategy {pooling!r}: the cross-attn scorer reads "
            "every text token (pooling_strategy 'pass') and no other scorer can"
        )
    if scorer == "cross-attn" and arch != "uni-encoder":
        raise UnsupportedModel(f"scorer_type 'cross-attn' is supported for uni-encoder models, not {arch!r}")
    if scorer == "cross-attn" and raw.get("use_calibrator"):
        raise UnsupportedModel(
            "use_calibrator with scorer_type 'cross-attn' is not supported: the reference calibrator "
            "needs one text vector, the cross-attn scorer keeps every token"
        )
    if raw.get("squeeze_layers") and raw.get("encoder_layer_id", -1) == -1 and arch == "uni-encoder":
        raise UnsupportedModel(SQUEEZE_REFUSAL)
    if raw.get("multimodal"):
        raise UnsupportedModel("multimodal=true (decoder-kv media encoders) is not supported")
