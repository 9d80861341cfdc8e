"""Save -> load round trips of trainable GLiClass models on a tiny encoder.

`GLiClassTrainable.save` writes through `modeling.loading.save_checkpoint`; `Classifier` loads that
directory with the inference loader and its own Packer. The scores it serves must equal the
trainable's own `predict`, for every architecture training supports, both prompt positions, both
scoring modes and a text long enough to be cut.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.training import tiny_encoder_dir
from safetensors.torch import load_file

from gliclass_core import Classifier
from gliclass_core.errors import InvalidInput
from gliclass_core.modeling.loading import WEIGHT_PREFIX, load_network, read_config, save_checkpoint
from gliclass_core.training.datasets import parse_example
from gliclass_core.training.gliclass_init import new_gliclass
from gliclass_core.training.gliclass_trainable import GLiClassTrainable
from gliclass_core.training.trainer import TrainConfig, train

LABELS = ["sport", "finance", "cooking", "weather forecast"]
TEXTS = [
    "The striker scored twice in the derby",
    "Stocks rallied as bond yields dropped",
    "Whisk the eggs",
    # Longer than the tiny encoder's 128 positions: the text is cut, the labels are kept.
    " ".join(["Rain is expected over the hills tomorrow while the bakery sells bread"] * 20),
]
# Each text its own label list (different lengths), as a training batch has them.
PER_TEXT = [LABELS, LABELS[:2], LABELS[::-1], LABELS[1:]]
VARIANTS = {
    "uni-prompt-first": {"architecture": "uni-encoder", "pooling": "first", "prompt_first": True},
    "uni-text-first": {"architecture": "uni-encoder", "pooling": "avg", "prompt_first": False},
    "bi-avg": {"architecture": "bi-encoder", "pooling": "avg"},
}


def build(name: str) -> GLiClassTrainable:
    torch.manual_seed(0)
    model = new_gliclass(tiny_encoder_dir(), seed=1, **VARIANTS[name])  # type: ignore[arg-type]
    # A few steps, so the heads are no longer their initial values when the checkpoint is written.
    rows = [{"text": t, "all_labels": lbls, "true_labels": [lbls[0]]} for t, lbls in zip(TEXTS, PER_TEXT)]
    cfg = TrainConfig(epochs=2, batch_size=2, encoder_lr=1e-3, head_lr=3e-3, warmup_ratio=0.0, progress=False)
    train(model, [parse_example(r) for r in rows], (), cfg, log=lambda _: None)
    return model


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def saved(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, GLiClassTrainable, Path]:
    model = build(request.param)
    out = tmp_path_factory.mktemp(request.param)
    model.save(out)
    return request.param, model, out


@pytest.mark.parametrize("multi_label", [True, False])
def test_classifier_serves_the_scores_the_trainable_predicts(
    saved: tuple[str, GLiClassTrainable, Path], multi_label: bool
) -> None:
    _, model, out = saved
    clf = Classifier.from_pretrained(str(out), device="cpu")
    served = clf.classify(TEXTS, PER_TEXT, multi_label=multi_label, threshold=0.0)
    own = model.predict(TEXTS, PER_TEXT, multi_label=multi_label)
    for pred, row, lbls in zip(served, own, PER_TEXT):
        assert list(row) == lbls == list(pred.scores)
        np.testing.assert_allclose([pred.scores[x] for x in lbls], [row[x] for x in lbls], atol=1e-5)
    spread = np.ptp([s for row in own for s in row.values()])
    assert spread > 1e-3  # the scores differ between labels, so a wrong weight or marker would show
    assert served[3].truncated  # the long text was cut at inference, as in training


def test_the_checkpoint_holds_the_config_and_every_weight(saved: tuple[str, GLiClassTrainable, Path]) -> None:
    _, model, out = saved
    # As JSON has it (id2label's int keys become strings).
    assert json.loads((out / "config.json").read_text()) == json.loads(json.dumps(model.raw_config))
    assert json.loads((out / "config.json").read_text())["model_type"] == "GLiClass"
    stored = load_file(str(out / "model.safetensors"))
    own = model.network.state_dict()
    assert set(stored) == {WEIGHT_PREFIX + k for k in own}
    loaded = load_network(out, read_config(out)).state_dict()
    for key, value in own.items():
        assert torch.equal(loaded[key], value), key


def test_save_checkpoint_writes_what_the_loader_reads(tmp_path: Path) -> None:
    model = build("bi-avg")
    target = tmp_path / "nested" / "ckpt"
    assert save_checkpoint(target, model.network, model.raw_config, model.tokenizer) == target
    again = GLiClassTrainable.from_pretrained(str(target))
    assert again.predict(TEXTS, PER_TEXT) == model.predict(TEXTS, PER_TEXT)


def test_labels_that_leave_the_text_no_room_are_a_typed_error() -> None:
    model = new_gliclass(tiny_encoder_dir(), "uni-encoder")
    many = [f"label number {i}" for i in range(60)]  # ~300 prompt tokens, more than 128 positions
    with pytest.raises(InvalidInput, match="labels"):
        model.compute_loss([parse_example({"text": "short", "all_labels": many, "true_labels": [many[0]]})])
