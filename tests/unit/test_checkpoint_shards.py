"""Sharded checkpoints: the index's shard names must stay inside the checkpoint directory."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from gliclass_core import Classifier
from gliclass_core.errors import CheckpointError

TEXT = "The app crashes when I open settings"
LABELS = ["bug report", "billing"]


def scores(directory: Path) -> list[float]:
    return list(
        Classifier.from_pretrained(str(directory), device="cpu").classify(TEXT, LABELS)[0].scores.values()
    )


@pytest.fixture(scope="module")
def single(own_checkpoint) -> Path:
    return own_checkpoint("shards-base", pooling_strategy="first")


def shard(single: Path, out: Path, place: Callable[[int], str]) -> Path:
    """Copy `single` with its weights split in two shards, shard i written to `out / place(i)`."""
    shutil.copytree(single, out, ignore=shutil.ignore_patterns("model.safetensors"))
    state = load_file(str(single / "model.safetensors"))
    names = sorted(state)
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, half in enumerate(halves):
        target = out / place(i)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({n: state[n] for n in half}, str(target), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(half, place(i)))
    write_index(out, weight_map)
    return out


def write_index(directory: Path, weight_map: object) -> None:
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def retarget(directory: Path, old: str, new: str) -> None:
    """Point every weight_map entry naming `old` at `new` instead."""
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    write_index(directory, {k: new if v == old else v for k, v in index["weight_map"].items()})


def test_sharded_checkpoint_scores_like_the_single_file(single: Path, tmp_path: Path) -> None:
    sharded = shard(single, tmp_path / "sharded", lambda i: f"model-0000{i + 1}-of-00002.safetensors")
    nested = shard(single, tmp_path / "nested", lambda i: f"weights/part-{i}.safetensors")
    expected = scores(single)
    for directory in (sharded, nested):
        np.testing.assert_allclose(scores(directory), expected, atol=1e-6)


def test_a_symlinked_shard_file_loads_like_a_hub_cache_snapshot(single: Path, tmp_path: Path) -> None:
    # The hub cache keeps each file of snapshots/<rev>/ as a symlink into ../../blobs/.
    repo = tmp_path / "models--org--name"
    snapshot = shard(single, repo / "snapshots" / "rev", lambda i: f"model-{i}.safetensors")
    (repo / "blobs").mkdir()
    for i in range(2):
        blob = repo / "blobs" / f"blob{i}"
        (snapshot / f"model-{i}.safetensors").rename(blob)
        (snapshot / f"model-{i}.safetensors").symlink_to(Path("../../blobs") / blob.name)
    np.testing.assert_allclose(scores(snapshot), scores(single), atol=1e-6)


@pytest.mark.parametrize("escape", ["dotdot", "dotdot-inside-path", "absolute", "symlinked-folder", "dot"])
def test_shard_names_leaving_the_checkpoint_are_checkpoint_errors(
    single: Path, tmp_path: Path, escape: str
) -> None:
    ckpt = shard(single, tmp_path / "ckpt", lambda i: f"model-{i}.safetensors")
    outside = tmp_path / "outside"
    outside.mkdir()
    # A real, loadable shard outside the checkpoint: only the path check can refuse it.
    shutil.copy(ckpt / "model-1.safetensors", outside / "model-1.safetensors")
    names = {
        "dotdot": "../outside/model-1.safetensors",
        "dotdot-inside-path": "sub/../../outside/model-1.safetensors",
        "absolute": str(outside / "model-1.safetensors"),
        "symlinked-folder": "linked/model-1.safetensors",
        "dot": ".",
    }
    if escape == "symlinked-folder":
        (ckpt / "linked").symlink_to(outside, target_is_directory=True)
    (ckpt / "model-1.safetensors").unlink()
    retarget(ckpt, "model-1.safetensors", names[escape])
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        Classifier.from_pretrained(str(ckpt), device="cpu")


@pytest.mark.parametrize(
    ("weight_map", "words"),
    [
        ([], "non-empty object"),
        ({}, "non-empty object"),
        ({"w": 3}, "shard file name"),
        ({"w": ["a.safetensors"]}, "shard file name"),
        ({"w": ""}, "shard file name"),
    ],
)
def test_malformed_weight_maps_are_checkpoint_errors(
    single: Path, tmp_path: Path, weight_map: object, words: str
) -> None:
    ckpt = shard(single, tmp_path / "ckpt", lambda i: f"model-{i}.safetensors")
    write_index(ckpt, weight_map)
    with pytest.raises(CheckpointError, match=words):
        Classifier.from_pretrained(str(ckpt), device="cpu")


def test_index_that_is_not_json_is_a_checkpoint_error(single: Path, tmp_path: Path) -> None:
    ckpt = shard(single, tmp_path / "ckpt", lambda i: f"model-{i}.safetensors")
    (ckpt / "model.safetensors.index.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(CheckpointError, match="unreadable shard index"):
        Classifier.from_pretrained(str(ckpt), device="cpu")
