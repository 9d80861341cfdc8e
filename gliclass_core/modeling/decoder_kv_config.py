"""Parse a decoder-kv GLiClass `config.json` (reference `gliclass` 0.1.21, `GLiClassDecoderKV`).

A decoder-kv checkpoint reads `[prompt][examples]text<<SEP>>label1<<LABEL>>...<<SEP>>` with a
decoder LLM and scores the label block with a small bidirectional scorer. Every key the reference's
config has is either honoured here, known not to change decoder-kv inference in the reference
(`INERT_KEYS`), or refused by name (`refusal`), so a checkpoint never loads into a different network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gliclass_core.errors import CheckpointError, UnsupportedModel

ARCHITECTURE = "decoder-kv"
# encoder_config model_type -> the transformers class name of the backbone we build.
BACKBONES = {
    "qwen3": "Qwen3Model",
    "qwen3_5_text": "Qwen3_5TextModel",
    "qwen3_5": "Qwen3_5TextModel",
    "embedding_gemma2": "EmbeddingGemma2Model",
}
# Backbones that are bidirectional encoders: no KV cache, so a row is encoded whole and no session is kept.
BIDIRECTIONAL = frozenset({"EmbeddingGemma2Model"})
# Why such a model keeps no streaming sessions (the reference refuses them too).
NO_KV_CACHE = (
    "streaming sessions need a KV cache: the decoder-kv backbone {backbone} is a bidirectional encoder "
    "without one (a row is encoded whole); use classic classification"
)
# Keys the reference's decoder-kv path never reads at inference (training losses, options of the
# encoder families): they may hold any value.
INERT_KEYS = frozenset(
    "ignore_index initializer_range max_num_classes focal_loss_alpha focal_loss_gamma focal_loss_reduction "
    "logit_scale_init_value max_labels_alloc contrastive_loss_coef dropout scorer_attn_dropout "
    "scorer_full_sequence recurrent_min_steps recurrent_halt_threshold recurrent_improvement_coef "
    "recurrent_improvement_margin recurrent_bptt_steps recurrent_confidence_coef recurrent_confidence_mode "
    "recurrent_confidence_margin recurrent_read_text recurrent_inference_max_steps calibrator_dropout "
    "freeze_media_encoders "
    "problem_type scorer_type scorer_num_heads pooling_strategy class_token_pooling "
    "prompt_first embed_class_token extract_text_features use_lstm use_segment_embeddings squeeze_layers "
    "layer_wise encoder_layer_id projector_hidden_act text_token_index label_model_config label_model_name "
    "calibrator_hidden_size calibrator_beta_max calibrator_use_bias".split()
)


@dataclass(frozen=True)
class DecoderKVConfig:
    """What defines decoder-kv inference: the backbone, the marker ids and the scorer's shape."""

    backbone: str
    decoder_config: dict[str, Any]
    hidden_size: int
    class_token_index: int
    sep_token_index: int
    example_token_index: int
    scorer_layers: int
    scorer_mlp_hidden_size: int
    normalize_features: bool
    use_embedding_projection: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def scorer_heads(self) -> int:
        """The reference sizes the scorer's heads from its width (`scorer_num_heads` is not read)."""
        return max(1, self.hidden_size // 64)

    @property
    def hybrid(self) -> bool:
        """Whether some backbone layers are linear attention (recurrent states beside the KV cache)."""
        return "linear_attention" in (self.text_config.get("layer_types") or [])

    @property
    def bidirectional(self) -> bool:
        """Whether the backbone is a bidirectional encoder without a KV cache (no streaming sessions)."""
        return self.backbone in BIDIRECTIONAL

    @property
    def text_config(self) -> dict[str, Any]:
        """The backbone's text settings (EmbeddingGemma 2 nests them in `text_config`)."""
        nested = self.decoder_config.get("text_config")
        return nested if self.bidirectional and isinstance(nested, dict) else self.decoder_config


def is_decoder_kv_config(raw: Mapping[str, Any]) -> bool:
    """Tell whether a parsed config.json is a decoder-kv GLiClass checkpoint."""
    return (
        str(raw.get("model_type", "")).lower() == "gliclass" and raw.get("architecture_type") == ARCHITECTURE
    )


def parse_decoder_kv_config(raw: dict[str, Any]) -> DecoderKVConfig:
    """Validate a decoder-kv config dict; UnsupportedModel names what we cannot run."""
    reason = refusal(raw)
    if reason:
        raise UnsupportedModel(reason)
    enc = raw["encoder_config"]
    if enc.get("model_type") == "qwen3_5":  # the composite (vision) config: the reference keeps its text part
        text = enc.get("text_config")
        if not isinstance(text, dict):
            raise CheckpointError("config.json: a qwen3_5 encoder_config needs its 'text_config'")
        enc = {**text, "model_type": "qwen3_5_text"}
    decoder = dict(enc)
    backbone = BACKBONES[str(raw["encoder_config"]["model_type"])]
    projection = False
    if backbone in BIDIRECTIONAL:
        decoder, projection = _embedding_gemma2(raw, decoder)
        text = decoder["text_config"]
    else:
        text = decoder
    vocab = raw.get("vocab_size")
    if isinstance(vocab, int) and vocab > 0:
        text["vocab_size"] = vocab  # the reference resizes the backbone's embeddings to it
    # The scorer reads the backbone's last states: EmbeddingGemma 2's projection when it is kept.
    width = text.get("embedding_dim", 768) if projection else text.get("hidden_size")
    hidden = raw.get("hidden_size") or width
    if not isinstance(hidden, int) or hidden != width:
        what = "embedding_dim (use_embedding_projection)" if projection else "hidden_size"
        raise UnsupportedModel(
            f"decoder-kv hidden_size {hidden!r} differs from the backbone's {what} {width!r}: "
            "the scorer reads the backbone's states directly"
        )
    if "sep_token_index" not in raw:
        raise CheckpointError("config.json: decoder-kv needs 'sep_token_index' (the <<SEP>> token id)")
    return DecoderKVConfig(
        backbone=backbone,
        decoder_config=decoder,
        hidden_size=hidden,
        class_token_index=_int(raw, "class_token_index"),
        sep_token_index=_int(raw, "sep_token_index"),
        example_token_index=_int(raw, "example_token_index"),
        scorer_layers=_int(raw, "scorer_encoder_num_layers", 2),
        scorer_mlp_hidden_size=_int(raw, "scorer_mlp_hidden_size", 1024),
        normalize_features=bool(raw.get("normalize_features", False)),
        use_embedding_projection=projection,
        raw=raw,
    )


def refusal(raw: Mapping[str, Any]) -> str | None:
    """Why a decoder-kv config cannot be run here (naming the key), or None."""
    enc = raw.get("encoder_config")
    if not isinstance(enc, Mapping) or not isinstance(enc.get("model_type"), str):
        return "config.json: decoder-kv needs an 'encoder_config' with a 'model_type'"
    model_type = enc["model_type"]
    if enc.get("auto_map") or raw.get("auto_map"):
        return (
            f"decoder-kv backbone {model_type!r} needs trust_remote_code (its own modelling code, auto_map): "
            "custom code is never run"
        )
    if model_type == "embedding_gemma2_text":
        return (
            "decoder-kv backbone 'embedding_gemma2_text' (a bare text config) is not run by the reference "
            "either: an EmbeddingGemma 2 checkpoint's encoder_config is the composite 'embedding_gemma2'"
        )
    if model_type not in BACKBONES:
        return (
            f"decoder-kv backbone {model_type!r} is not supported (the reference runs qwen3, qwen3_5 and "
            f"embedding_gemma2; supported here: {', '.join(sorted(BACKBONES))})"
        )
    if raw.get("multimodal"):
        return "multimodal=true (decoder-kv media encoders) is not supported"
    steps = raw.get("recurrent_steps", 1)
    if steps not in (None, 1) and raw.get("recurrent_inference", True):
        return (
            f"recurrent_steps {steps!r} with recurrent_inference (the decoder-kv scorer's recurrent "
            "reasoning cell) is not supported"
        )
    if raw.get("use_calibrator"):
        return "use_calibrator with architecture_type 'decoder-kv' is not supported"
    return None


def _embedding_gemma2(raw: Mapping[str, Any], enc: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The EmbeddingGemma 2 backbone config, text only (as the reference builds it), and whether the
    scorer reads `embedding_projection` (`use_embedding_projection`; unset: when hidden_size equals
    embedding_dim, the reference's rule for older checkpoints)."""
    text = enc.get("text_config")
    if not isinstance(text, dict):
        raise CheckpointError("config.json: an embedding_gemma2 encoder_config needs its 'text_config'")
    if text.get("model_type", "embedding_gemma2_text") != "embedding_gemma2_text":
        raise UnsupportedModel(
            f"embedding_gemma2 text_config model_type {text.get('model_type')!r}: "
            "expected 'embedding_gemma2_text'"
        )
    # The reference drops the vision / audio towers (text only): their weights are never read.
    decoder = {**enc, "text_config": dict(text), "vision_config": None, "audio_config": None}
    flag = raw.get("use_embedding_projection")
    if flag is None:
        return decoder, raw.get("hidden_size") == text.get("embedding_dim", 768)
    return decoder, bool(flag)


def _int(raw: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"config.json: '{key}' must be an integer, got {value!r}")
    return value
