"""GliZNet checkpoints as their authors' code saves them: loading, parity, and saving in that format.

The checkpoints under tests/data/gliznet_authors/ were written once by the authors' code
(KameniAlexNea/zero-shot-classification, gliznet/model.py at 07d5912) on a tiny random BERT, and
expected.json holds what that code's ZeroShotClassificationPipeline returned (see the README there).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.training import tiny_encoder_dir
from safetensors.torch import load_file, save_file

from gliclass_core import Classifier
from gliclass_core.errors import CheckpointError, InvalidInput
from gliclass_core.gliznet_classifier import GliZNetClassifier
from gliclass_core.modeling.gliznet import GliZNet
from gliclass_core.processing.long_text import chunk_text
from gliclass_core.types import ClassifyItem

DATA = Path(__file__).parents[1] / "data" / "gliznet_authors"
VARIANTS = sorted(p.name for p in DATA.iterdir() if (p / "expected.json").is_file())
AUTHORS_CONFIG_KEYS = {
    "backbone_config", "projected_dim", "similarity_metric", "dropout_rate", "use_projection_layernorm",
    "use_lab_token_for_labels", "lab_token_id", "bce_loss_weight", "supcon_loss_weight",
    "label_repulsion_weight", "logit_scale_init", "learn_temperature", "repulsion_threshold", "model_type",
}  # fmt: skip


def expected(name: str) -> dict:
    return json.loads((DATA / name / "expected.json").read_text())  # type: ignore[no-any-return]


def test_fixtures_cover_every_metric_and_pooling() -> None:
    seen = set()
    for name in VARIANTS:
        raw = json.loads((DATA / name / "config.json").read_text())
        seen.add((raw["similarity_metric"], raw["use_lab_token_for_labels"]))
    assert seen == {(m, lab) for m in ("cosine", "dot", "bilinear") for lab in (False, True)}


@pytest.mark.parametrize("name", VARIANTS)
def test_scores_equal_the_authors_pipeline(name: str) -> None:
    want = expected(name)
    clf = Classifier.from_pretrained(str(DATA / name), device="cpu")
    assert clf.info.architecture == "gliznet"
    multi = clf.classify(want["texts"], want["labels"])
    single = clf.classify(want["texts"], want["labels"], multi_label=False)
    for got, ref in ((multi, want["multi_label"]), (single, want["single_label"])):
        assert [list(p.scores) for p in got] == [want["labels"]] * len(got)
        np.testing.assert_allclose([list(p.scores.values()) for p in got], ref, atol=1e-5)
    # Their pipeline's batch (per-text label lists), and ours one text at a time: all equal.
    batched = clf.classify(want["texts"], want["batch_labels"])
    alone = [
        clf.classify([t], labels, batch_size=1)[0] for t, labels in zip(want["texts"], want["batch_labels"])
    ]
    for got_b, got_a, ref in zip(batched, alone, want["batch_multi_label"]):
        np.testing.assert_allclose(list(got_b.scores.values()), ref, atol=1e-5)
        np.testing.assert_allclose(list(got_a.scores.values()), ref, atol=1e-5)


@pytest.mark.parametrize("name", ["cosine-mean", "bilinear-lab", "cosine-mean-noproj"])
def test_our_save_is_the_authors_format_and_round_trips(name: str, tmp_path: Path) -> None:
    net = GliZNet.from_pretrained(DATA / name)
    net.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    original = json.loads((DATA / name / "config.json").read_text())
    assert AUTHORS_CONFIG_KEYS <= set(raw)
    assert {k: raw[k] for k in AUTHORS_CONFIG_KEYS - {"backbone_config"}} == {
        k: original[k] for k in AUTHORS_CONFIG_KEYS - {"backbone_config"}
    }
    assert set(load_file(str(tmp_path / "model.safetensors"))) == set(
        load_file(str(DATA / name / "model.safetensors"))
    )
    want = expected(name)
    again = Classifier.from_pretrained(str(tmp_path), device="cpu").classify(want["texts"], want["labels"])
    np.testing.assert_allclose([list(p.scores.values()) for p in again], want["multi_label"], atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "lab"])
def test_a_model_we_start_saves_the_authors_weight_names(pooling: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    ours = GliZNet.from_encoder(tiny_encoder_dir(), projected_dim=8, label_pooling=pooling)
    ours.model.eval()
    ours.save_pretrained(tmp_path)
    reference = "cosine-lab" if pooling == "lab" else "cosine-mean"
    # Same backbone family (2-layer BERT) and heads: the same tensor names as the authors' checkpoint.
    assert set(load_file(str(tmp_path / "model.safetensors"))) == set(
        load_file(str(DATA / reference / "model.safetensors"))
    )
    raw = json.loads((tmp_path / "config.json").read_text())
    assert AUTHORS_CONFIG_KEYS <= set(raw) and raw["use_lab_token_for_labels"] == (pooling == "lab")
    tokenizer_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "[LAB]" in json.dumps(tokenizer_config)
    loaded = GliZNet.from_pretrained(tmp_path)
    passes = ours.pack("The match ended 2-1", ["sport", "finance"])
    np.testing.assert_allclose(loaded.forward(passes)[0], ours.forward(passes)[0], atol=1e-6)


def test_checkpoints_in_our_earlier_layout_still_load(tmp_path: Path) -> None:
    net = GliZNet.from_pretrained(DATA / "cosine-mean")
    shutil.copytree(DATA / "cosine-mean", tmp_path, dirs_exist_ok=True)
    renames = {"backbone.": "encoder.", "aggregator.text_projector.0.": "text_projector.linear.",
               "aggregator.text_projector.1.": "text_projector.norm.",
               "aggregator.label_projector.0.": "label_projector.linear.",
               "aggregator.label_projector.1.": "label_projector.norm."}  # fmt: skip
    legacy = {}
    for key, value in load_file(str(tmp_path / "model.safetensors")).items():
        new = {"aggregator.similarity_head.logit_scale": "logit_scale", "loss_fn.bce_scale": "bce_scale"}.get(
            key, key
        )
        for old, prefix in renames.items():
            if key.startswith(old):
                new = prefix + key[len(old) :]
        legacy[new] = value
    save_file(legacy, str(tmp_path / "model.safetensors"))
    c = net.config
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "gliznet", "encoder_config": c.encoder_config, "lab_token_id": c.lab_token_id,
        "projected_dim": c.projected_dim, "label_pooling": "mean", "max_length": c.max_length,
    }))  # fmt: skip
    want = expected("cosine-mean")
    got = Classifier.from_pretrained(str(tmp_path), device="cpu").classify(want["texts"], want["labels"])
    np.testing.assert_allclose([list(p.scores.values()) for p in got], want["multi_label"], atol=1e-5)


def _edit_config(tmp_path: Path, name: str, **changes: object) -> Path:
    shutil.copytree(DATA / name, tmp_path, dirs_exist_ok=True)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        raw.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return tmp_path


@pytest.mark.parametrize(
    ("name", "changes", "words"),
    [
        ("cosine-mean", {"backbone_config": None}, "backbone_config"),
        ("cosine-mean", {"similarity_metric": "euclid"}, "similarity_metric"),
        ("cosine-mean-noproj", {"projected_dim": 4}, "use_projection_layernorm"),
        ("cosine-lab", {"lab_token_id": 5}, "[LAB]"),
        ("dot-mean", {"use_projection_layernorm": False, "projected_dim": None}, "weights do not match"),
    ],
)
def test_inconsistent_checkpoints_are_refused_at_load(
    name: str, changes: dict, words: str, tmp_path: Path
) -> None:
    directory = _edit_config(tmp_path, name, **changes)
    with pytest.raises(CheckpointError, match=words.replace("[", r"\[")):
        Classifier.from_pretrained(str(directory), device="cpu")


def test_lab_marker_in_the_input_is_refused() -> None:
    clf = GliZNetClassifier.load(DATA / "cosine-lab", "authors", device="cpu")
    for fields, field in (({"text": "a [LAB] b"}, "text"), ({"labels": ("x[LAB]",)}, "labels")):
        item = ClassifyItem(**{"text": "t", "labels": ("a",), **fields})  # type: ignore[arg-type]
        with pytest.raises(InvalidInput) as err:
            clf.prepare(item, 1)
        assert err.value.field == field and err.value.index == 1


def test_chunk_mode_on_gliznet_is_the_max_over_chunks() -> None:
    clf = Classifier.from_pretrained(str(DATA / "dot-lab"), device="cpu")
    want = expected("dot-lab")
    text = " ".join(want["texts"])
    pred = clf.classify([text], want["labels"], long_text="chunk", text_chunk_size=60, text_chunk_overlap=10,
                        labels_chunk_size=100)[0]  # fmt: skip
    pieces = clf.classify(chunk_text(text, 60, 10), want["labels"])
    assert pred.text_chunks == len(pieces) > 1
    for label in want["labels"]:
        assert pred.scores[label] == pytest.approx(max(p.scores[label] for p in pieces), abs=1e-6)
