"""Build a transformer backbone from a nested config dict (no hub access)."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from gliclass_core.errors import UnsupportedModel

log = logging.getLogger(__name__)

# Backbones the reference maps to llm2vec's bidirectional models (gliclass 0.1.21 DECODER_MODEL_MAPPING).
LLM2VEC_TYPES = ("mistral", "llama", "gemma", "qwen2")
# Keys of a saved sub-config that describe the saving run, not the architecture.
_DROP_KEYS = ("_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype")


def refuse_wrong_attention(config: dict[str, Any]) -> None:
    """Raise UnsupportedModel for an encoder config that AutoModel would build with causal attention.

    A decoder LLM (Llama, Qwen, Mistral, Gemma, GPT-2, ...) given as `encoder_config` would run
    causally, so label markers could not see the text after them; the reference runs such backbones
    only through LLM2Vec's bidirectional wrappers (`llm2vec`), and checkpoints with their own code
    (`auto_map`) need that code. We refuse both rather than score with the wrong attention.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = str(config.get("model_type"))
    if config.get("auto_map"):
        raise UnsupportedModel(
            f"encoder {model_type!r} needs its own modelling code (auto_map {sorted(config['auto_map'])}), "
            "i.e. trust_remote_code: custom code is never run, and AutoModel would build a different network"
        )
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        raise UnsupportedModel(
            f"encoder model_type {model_type!r} is not known to transformers: a backbone that needs "
            "trust_remote_code (its own modelling code) is never run"
        )
    if config.get("is_decoder") or config.get("is_encoder_decoder"):
        raise UnsupportedModel(f"encoder {model_type!r} is a decoder / encoder-decoder model")
    if model_type in LLM2VEC_TYPES:
        raise UnsupportedModel(
            f"encoder {model_type!r} is a causal decoder: the reference runs it bidirectionally only through "
            "the llm2vec package (LLM2Vec-style GLiClass checkpoints), and llm2vec 0.2.3 requires "
            "transformers>=4.43.1,<=4.44.2 while gliclass 0.1.21 requires transformers>=5, so the two "
            "cannot be installed together: there is no reference to match, and AutoModel would run it "
            "causally"
        )
    if (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        raise UnsupportedModel(
            f"encoder {model_type!r} is a causal decoder: AutoModel would run it with causal attention, "
            "not the bidirectional LLM2Vec variant the reference uses for decoder backbones (package "
            "llm2vec), which is not implemented here"
        )


def build_encoder(config: dict[str, Any], attention: str = "sdpa") -> nn.Module:
    """Instantiate `transformers.AutoModel` for `config` with random weights (weights load later)."""
    from transformers import AutoConfig, AutoModel

    model_type = config.get("model_type")
    refuse_wrong_attention(config)
    kwargs = {k: v for k, v in config.items() if k not in _DROP_KEYS and k != "model_type"}
    try:
        hf_config = AutoConfig.for_model(str(model_type), **kwargs)
    except (ValueError, KeyError) as exc:
        raise UnsupportedModel(
            f"encoder model_type {model_type!r} is not known to transformers: a backbone that needs "
            "trust_remote_code (its own modelling code) is never run"
        ) from exc
    if getattr(hf_config, "is_decoder", False) or getattr(hf_config, "is_encoder_decoder", False):
        raise UnsupportedModel(f"encoder {model_type!r} is a decoder / encoder-decoder model")
    for impl in (attention, "eager"):
        try:
            model = AutoModel.from_config(hf_config, attn_implementation=impl)
            break
        except (ValueError, ImportError) as exc:
            log.info("attention %s unavailable for %s: %s", impl, model_type, exc)
    else:  # pragma: no cover - eager always exists
        raise UnsupportedModel(f"cannot build encoder {model_type!r}")
    return model


def build_encoder_decoder(config: dict[str, Any]) -> nn.Module:
    """Instantiate a T5-style encoder-decoder (`AutoModel`, e.g. T5Model) for `config`, random weights."""
    from transformers import AutoConfig, AutoModel

    model_type = config.get("model_type")
    kwargs = {k: v for k, v in config.items() if k not in _DROP_KEYS and k != "model_type"}
    try:
        hf_config = AutoConfig.for_model(str(model_type), **kwargs)
    except (ValueError, KeyError) as exc:
        raise UnsupportedModel(f"encoder model_type {model_type!r} is not known to transformers") from exc
    if not getattr(hf_config, "is_encoder_decoder", False):
        raise UnsupportedModel(f"encoder {model_type!r} is not an encoder-decoder model")
    return AutoModel.from_config(hf_config, attn_implementation="eager")
