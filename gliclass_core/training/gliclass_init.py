"""Start a new GLiClass model (uni-encoder or bi-encoder) from a plain HF encoder directory.

The config written mirrors what the reference `GLiClassModelConfig.save_pretrained` records, so
the reference package loads what we train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch

from gliclass_core.errors import CheckpointError, InvalidInput
from gliclass_core.training.gliclass_trainable import GLiClassTrainable

SPECIAL_TOKENS = ["<<LABEL>>", "<<SEP>>", "<<EXAMPLE>>"]
_DROP = ("_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype")


def new_gliclass(
    encoder_dir: str | Path,
    architecture: str = "uni-encoder",
    pooling: str = "first",
    scorer: str = "simple",
    normalize_features: bool | None = None,
    prompt_first: bool = True,
    alpha: float | None = None,
    gamma: float | None = None,
    seed: int = 0,
) -> GLiClassTrainable:
    """Build a GLiClass model whose backbone(s) are the encoder's weights and whose heads are new."""
    from transformers import AutoModel, AutoTokenizer

    from gliclass_core.modeling.config import parse_config
    from gliclass_core.modeling.heads import GLiClassNetwork

    if architecture not in ("uni-encoder", "bi-encoder"):
        raise InvalidInput(
            f"architecture must be uni-encoder or bi-encoder, got {architecture!r}", field="arch"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
        encoder = AutoModel.from_pretrained(str(encoder_dir))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load base encoder from {encoder_dir}: {exc}") from exc
    n = len(tokenizer)
    if normalize_features is None:
        normalize_features = architecture == "bi-encoder"  # cosine scoring for bi-encoders
    if architecture == "uni-encoder":
        tokenizer.add_tokens(SPECIAL_TOKENS, special_tokens=True)
        encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    enc_cfg = {k: v for k, v in encoder.config.to_dict().items() if k not in _DROP}
    enc_cfg["vocab_size"] = len(tokenizer)
    hidden = int(enc_cfg["hidden_size"])
    raw: dict[str, Any] = {
        "model_type": "GLiClass",
        "architectures": ["GLiClassModel"],
        "architecture_type": architecture,
        "encoder_config": enc_cfg,
        "encoder_model": str(encoder_dir),
        "class_token_index": n,
        "text_token_index": n + 1,
        "example_token_index": n + 2,
        "hidden_size": hidden,
        "vocab_size": len(tokenizer),
        "projector_hidden_act": "gelu",
        "pooling_strategy": pooling,
        "class_token_pooling": "first",
        "scorer_type": scorer,
        "normalize_features": normalize_features,
        "prompt_first": prompt_first,
        "embed_class_token": True,
        "extract_text_features": False,
        "problem_type": "multi_label_classification",
        "focal_loss_alpha": 0.5 if alpha is None else alpha,
        "focal_loss_gamma": 2.0 if gamma is None else gamma,
        "logit_scale_init_value": 10.0 if normalize_features else 1.0,
        "max_num_classes": 25,
        "dropout": 0.1,
    }
    if architecture == "bi-encoder":
        raw["label_model_name"] = str(encoder_dir)
        raw["label_model_config"] = dict(enc_cfg)
    torch.manual_seed(seed)
    network = GLiClassNetwork(parse_config(raw))
    state = encoder.state_dict()
    network.encoder_model.load_state_dict(state, strict=False)
    if architecture == "bi-encoder":
        network.label_encoder.load_state_dict(state, strict=False)
    with torch.no_grad():
        if architecture == "uni-encoder":
            emb = cast(Any, network.encoder_model).get_input_embeddings().weight
            sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
            emb[n : n + 3] = emb[int(sep)] if sep is not None else emb[:n].mean(0)
        # A cosine score needs a scale to reach confident probabilities; the reference uses it raw.
        network.logit_scale.fill_(float(raw["logit_scale_init_value"]))
    return GLiClassTrainable(network, tokenizer, raw, alpha, gamma)
