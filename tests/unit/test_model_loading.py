"""Checkpoint loading: formats, and typed errors naming what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gliclass_core import Classifier
from gliclass_core.errors import CheckpointError, UnsupportedModel


@pytest.fixture(scope="module")
def base(own_checkpoint) -> Path:
    return own_checkpoint("uni-first-load", pooling_strategy="first")


def _copy(base: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ckpt"
    shutil.copytree(base, out)
    return out


def _edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_pytorch_bin_loads_like_safetensors(base: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    path = _copy(base, tmp_path)
    torch.save(load_file(str(path / "model.safetensors")), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    a = Classifier.from_pretrained(str(base)).classify("hello world", ["x", "y"])[0]
    b = Classifier.from_pretrained(str(path)).classify("hello world", ["x", "y"])[0]
    assert np.allclose(list(a.scores.values()), list(b.scores.values()), atol=1e-6)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda p: (p / "config.json").unlink(), "config.json is missing"),
        (lambda p: (p / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "model.safetensors").unlink(), "no weights"),
        (lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 64), "corrupt"),
        (lambda p: (p / "tokenizer.json").unlink(), "tokenizer"),
        (lambda p: _edit_config(p, hidden_size=128), "shape"),
        (lambda p: _edit_config(p, class_token_index=5), "tokenizer maps <<LABEL>>"),
    ],
)
def test_damaged_checkpoints_raise_checkpoint_error(base: Path, tmp_path: Path, damage, words: str) -> None:
    path = _copy(base, tmp_path)
    damage(path)
    with pytest.raises(CheckpointError, match=words):
        Classifier.from_pretrained(str(path))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"architecture_type": "encoder-decoder"}, "encoder-decoder"),
        ({"architecture_type": "decoder-kv"}, "decoder-kv"),
        ({"scorer_type": "cross-attn"}, "cross-attn"),
        ({"scorer_type": "made-up"}, "made-up"),
        ({"pooling_strategy": "pass"}, "pass"),
        ({"squeeze_layers": True}, "squeeze_layers"),
        ({"model_type": "bert"}, "not a GLiClass"),
    ],
)
def test_unsupported_models_fail_at_load_naming_the_option(
    base: Path, tmp_path: Path, changes, words
) -> None:
    path = _copy(base, tmp_path)
    _edit_config(path, **changes)
    with pytest.raises(UnsupportedModel, match=words):
        Classifier.from_pretrained(str(path))


def test_decoder_encoder_is_unsupported(base: Path, tmp_path: Path) -> None:
    path = _copy(base, tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["encoder_config"]["is_decoder"] = True
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModel, match="decoder"):
        Classifier.from_pretrained(str(path))


def test_missing_directory_and_unknown_builtin() -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        Classifier.from_pretrained("./does/not/exist")
    with pytest.raises(CheckpointError, match="unknown builtin"):
        Classifier.from_pretrained("builtin:nope")


def test_hub_id_offline_gives_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        Classifier.from_pretrained("knowledgator/gliclass-small-v1.0")


def test_replicate_shares_caches_and_agrees(builtin_classifier) -> None:
    twin = builtin_classifier.replicate("cpu")
    assert twin.packer is builtin_classifier.packer
    a = builtin_classifier.classify("My card was charged twice", ["billing", "sports"])[0]
    b = twin.classify("My card was charged twice", ["billing", "sports"])[0]
    assert a.scores == pytest.approx(b.scores, abs=1e-6)
