"""Build a transformer backbone from a nested config dict (no hub access)."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from gliclass_core.errors import UnsupportedModel

log = logging.getLogger(__name__)

# Keys of a saved sub-config that describe the saving run, not the architecture.
_DROP_KEYS = ("_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype")


def build_encoder(config: dict[str, Any], attention: str = "sdpa") -> nn.Module:
    """Instantiate `transformers.AutoModel` for `config` with random weights (weights load later)."""
    from transformers import AutoConfig, AutoModel

    model_type = config.get("model_type")
    kwargs = {k: v for k, v in config.items() if k not in _DROP_KEYS and k != "model_type"}
    try:
        hf_config = AutoConfig.for_model(str(model_type), **kwargs)
    except (ValueError, KeyError) as exc:
        raise UnsupportedModel(f"encoder model_type {model_type!r} is not known to transformers") from exc
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
