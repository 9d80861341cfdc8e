"""The training loop on a tiny encoder: loss goes down for every architecture, LR groups, early stopping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures.training import tiny_encoder_dir

from gliclass_core.training.datasets import LabelledExample, parse_example
from gliclass_core.training.gliclass_init import new_gliclass
from gliclass_core.training.gliznet_trainable import GliZNetTrainable
from gliclass_core.training.trainer import Trainable, TrainConfig, make_optimizer, train

LABELS = ["sport", "finance", "cooking"]
ROWS = [
    ("The striker scored twice in the derby", "sport"),
    ("The match ended 2-1 after extra time", "sport"),
    ("Stocks rallied as bond yields dropped", "finance"),
    ("The central bank raised interest rates", "finance"),
    ("Whisk the eggs and fold in the flour", "cooking"),
    ("Simmer the sauce for ten minutes", "cooking"),
]


def examples() -> list[LabelledExample]:
    return [parse_example({"text": t, "all_labels": LABELS, "true_labels": [y]}) for t, y in ROWS]


def build(arch: str) -> Trainable:
    torch.manual_seed(0)
    if arch == "gliznet":
        from gliclass_core.modeling.gliznet import GliZNet

        return GliZNetTrainable(
            GliZNet.from_encoder(tiny_encoder_dir(), projected_dim=16), shuffle_labels=False
        )
    return new_gliclass(tiny_encoder_dir(), arch, pooling="avg" if arch == "bi-encoder" else "first")


def eval_loss(model: Trainable, data: list[LabelledExample]) -> float:
    model.module.eval()
    with torch.no_grad():
        return float(model.compute_loss(data)[0])


# A fresh uni-encoder needs a pretrained encoder to learn: see tests/integration/test_training_roundtrip.py.
@pytest.mark.parametrize("arch", ["gliznet", "bi-encoder"])
def test_a_short_training_run_lowers_the_loss(arch: str, tmp_path: Path) -> None:
    model = build(arch)
    data = examples()
    before = eval_loss(model, data)
    cfg = TrainConfig(
        epochs=10,
        batch_size=3,
        encoder_lr=1e-3,
        head_lr=3e-3,
        warmup_ratio=0.0,
        freeze_embeddings=True,
        progress=False,
    )
    result = train(model, data, (), cfg, output_dir=tmp_path, log=lambda _: None)
    after = eval_loss(model, data)
    assert result.steps == 20 and result.examples_per_s > 0
    assert after < 0.7 * before, (before, after)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()


def test_encoder_and_heads_get_their_own_learning_rates() -> None:
    model = build("uni-encoder")
    opt = make_optimizer(model, TrainConfig(encoder_lr=1e-5, head_lr=1e-3))
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["encoder"]["lr"] == 1e-5 and groups["heads"]["lr"] == 1e-3
    encoder_ids = {id(p) for p in groups["encoder"]["params"]}
    assert id(model.module.logit_scale) not in encoder_ids
    assert all(id(p) in encoder_ids for p in model.module.encoder_model.parameters())
    frozen = make_optimizer(build("gliznet"), TrainConfig(freeze_embeddings=True))
    enc_params = next(g for g in frozen.param_groups if g["name"] == "encoder")["params"]
    assert all(p.dim() != 2 or p.shape[0] != 30523 for p in enc_params)  # the token table is left out


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    model = build("gliznet")
    data = examples()
    logs: list[str] = []
    # With zero learning rates the eval score cannot improve after epoch 1: patience 1 stops at epoch 2.
    cfg = TrainConfig(epochs=5, batch_size=3, encoder_lr=0.0, head_lr=0.0, patience=1, progress=False)
    result = train(model, data, data[:3], cfg, output_dir=tmp_path, log=logs.append)
    assert [e.epoch for e in result.epochs] == [1, 2]
    assert result.stopped_early and result.best_epoch == 1
    assert result.epochs[0].eval is not None and result.saved_to == str(tmp_path)
    assert any("early stopping" in line for line in logs)


@pytest.mark.parametrize("arch", ["gliznet", "uni-encoder", "bi-encoder"])
def test_to_moves_the_weights_and_where_inputs_are_built(arch: str) -> None:
    """`Trainable.to` (what `gliclass-stream train --device` calls); "meta" stands in for a GPU here."""
    model = build(arch)
    model.to("meta")
    assert {p.device.type for p in model.module.parameters()} == {"meta"}
    if isinstance(model, GliZNetTrainable):
        passes = model.net.pack("The striker scored twice", LABELS, max_passes=1)
        assert {t.device.type for t in model.net.collate(passes).values()} == {"meta"}


def test_without_best_epoch_selection_every_epoch_runs_and_the_last_is_saved(tmp_path: Path) -> None:
    model = build("gliznet")
    data = examples()
    logs: list[str] = []
    # The same frozen scores as above, but a handful of eval rows must not pick the epoch.
    cfg = TrainConfig(
        epochs=3, batch_size=3, encoder_lr=0.0, head_lr=0.0, patience=1, select_best=False, progress=False
    )
    result = train(model, data, data[:3], cfg, output_dir=tmp_path, log=logs.append)
    assert [e.epoch for e in result.epochs] == [1, 2, 3] and not result.stopped_early
    assert result.best_epoch == 3 and result.saved_to == str(tmp_path)
    assert result.before is not None and result.final is result.epochs[-1].eval
    assert result.before.macro_f1 == result.final.macro_f1  # zero learning rates: nothing moved
    assert logs[0].startswith("before training: eval macro-F1") and not any("early" in x for x in logs)


def test_relative_scoring_models_default_to_plain_bce() -> None:
    from gliclass_core.processing.relative import RelativeScoring
    from gliclass_core.training.gliclass_trainable import FOCAL_DEFAULT, PLAIN_BCE, default_loss

    assert default_loss(RelativeScoring(2.3, 0.6)) == PLAIN_BCE == (-1.0, -1.0)
    assert default_loss(None) == FOCAL_DEFAULT == (0.5, 2.0)
    model = build("uni-encoder")
    assert (model.alpha, model.gamma) == FOCAL_DEFAULT  # type: ignore[attr-defined]
