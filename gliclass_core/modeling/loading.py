"""Locate a checkpoint (local dir, hub id, builtin) and load its config, weights and tokenizer;
`save_checkpoint` writes the same layout back."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from gliclass_core.errors import CheckpointError
from gliclass_core.modeling.config import GLiClassConfig, parse_config
from gliclass_core.modeling.heads import GLiClassNetwork

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_FILES = ["config.json", "*.safetensors", "*.json", "*.model", "*.txt", "pytorch_model.bin"]
# The reference layout keys every network weight under this prefix (GLiClassModel.model.*).
WEIGHT_PREFIX = "model."
# Present in some checkpoints, never used by GLiClass inference.
_IGNORABLE = ("pooler.", "position_ids", "embeddings.token_type_ids")


def resolve_source(source: str) -> Path:
    """Return a local checkpoint directory for `source` (dir, `builtin:NAME`, or hub id)."""
    if not isinstance(source, str) or not source.strip():
        raise CheckpointError("model source must be a non-empty string")
    if source.startswith("builtin:"):
        from gliclass_core.builtin import materialize

        return materialize(source.split(":", 1)[1])
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{source}: not a directory (expected a checkpoint folder)")
    if _HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        return _download(source)
    raise CheckpointError(f"{source}: no such checkpoint directory")


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise CheckpointError("huggingface_hub is needed to load hub ids") from exc
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES, local_files_only=offline))
    except Exception as exc:  # every hub failure becomes one clear, typed error
        how = (
            "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else "the hub is unreachable"
        )
        raise CheckpointError(f"cannot fetch {repo_id!r} from the Hugging Face hub ({how}): {exc}") from exc


def read_config(directory: Path) -> GLiClassConfig:
    """Read and validate `config.json`."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: config.json is missing")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    return parse_config(raw)


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """Load weights from safetensors (single or sharded), else pytorch_model.bin with weights_only."""
    from safetensors.torch import load_file

    files: list[Path]
    index = directory / "model.safetensors.index.json"
    if (directory / "model.safetensors").is_file():
        files = [directory / "model.safetensors"]
    elif index.is_file():
        files = shard_files(directory, index)
    elif (directory / "pytorch_model.bin").is_file():
        try:
            loaded = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{directory}/pytorch_model.bin: cannot load safely ({exc})") from exc
        if not isinstance(loaded, dict):
            raise CheckpointError(f"{directory}/pytorch_model.bin: not a state dict")
        return loaded
    else:
        raise CheckpointError(f"{directory}: no weights (model.safetensors or pytorch_model.bin) found")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f}: weight shard is missing")
        try:
            state.update(load_file(str(f)))
        except Exception as exc:
            raise CheckpointError(f"{f}: corrupt or unreadable safetensors file ({exc})") from exc
    return state


def shard_files(directory: Path, index: Path) -> list[Path]:
    """The shard files an index's `weight_map` names; CheckpointError for any name leaving `directory`.

    A name must be a relative path without `..` whose folder, symlinks resolved, is inside
    `directory`. The shard file itself may be a symlink, as every file in a hub cache snapshot is.
    """
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index}: unreadable shard index ({exc})") from exc
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: weight_map must be a non-empty object of tensor name -> shard file")
    if not all(isinstance(name, str) and name for name in weight_map.values()):
        raise CheckpointError(f"{index}: every weight_map value must be a shard file name")
    root = directory.resolve()
    files: list[Path] = []
    for name in sorted(set(weight_map.values())):
        relative = PurePosixPath(name)
        path = directory / relative
        if relative.is_absolute() or ".." in relative.parts or not path.parent.resolve().is_relative_to(root):
            raise CheckpointError(f"{index}: shard {name!r} is outside the checkpoint directory")
        files.append(path)
    return files


def load_network(directory: Path, cfg: GLiClassConfig) -> GLiClassNetwork:
    """Build the network for `cfg` and load the checkpoint's weights into it, strictly."""
    state = read_state_dict(directory)
    state = {k.removeprefix(WEIGHT_PREFIX): v for k, v in state.items()}
    net = GLiClassNetwork(cfg)
    own = net.state_dict()
    unexpected = [
        k
        for k in state
        if k not in own and not any(p in k for p in _IGNORABLE) and not k.startswith(net.unused_weights)
    ]
    # Tied weights (e.g. T5's embed_tokens = shared) may be saved once: a key that shares storage
    # with a saved one is not missing.
    saved = {own[k].data_ptr() for k in state if k in own}
    missing = [
        k
        for k in own
        if k not in state and not any(p in k for p in _IGNORABLE) and own[k].data_ptr() not in saved
    ]
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            detail.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(f"{directory}: weights do not match config.json: {'; '.join(detail)}")
    bad = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"{directory}: weight {k} has shape {tuple(state[k].shape)}, config implies {tuple(own[k].shape)}"
        )
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return net.eval()


def load_tokenizer(directory: Path, cfg: GLiClassConfig) -> Any:
    """Load the checkpoint's tokenizer (fast), with the options some encoders need."""
    from transformers import AutoConfig, AutoTokenizer

    kwargs: dict[str, Any] = {}
    model_type = str(cfg.encoder_config.get("model_type"))
    if model_type == "modernbert":
        kwargs["add_prefix_space"] = True
    try:
        # The encoder's config type picks the tokenizer class; the checkpoint's own config.json
        # (model_type GLiClass) is unknown to transformers and only produces a warning.
        kwargs["config"] = AutoConfig.for_model(model_type)
    except (ValueError, KeyError):
        pass
    try:
        return AutoTokenizer.from_pretrained(str(directory), **kwargs)
    except Exception as exc:
        raise CheckpointError(f"{directory}: cannot load the tokenizer ({exc})") from exc


def save_checkpoint(
    directory: str | Path, network: GLiClassNetwork, raw_config: dict[str, Any], tokenizer: Any
) -> Path:
    """Write a checkpoint in the reference layout, which `load_network` and the `gliclass` package read.

    config.json is `raw_config` as given (`model_type` "GLiClass"); model.safetensors holds the
    network's weights under WEIGHT_PREFIX; the tokenizer writes its own files. Returns the directory.
    """
    from safetensors.torch import save_file

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(raw_config, indent=2))
    weights = network.state_dict().items()
    state = {f"{WEIGHT_PREFIX}{k}": v.detach().to("cpu").contiguous() for k, v in weights}
    save_file(state, str(root / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(root))
    return root
