"""Each training loss against values worked out by hand (numbers from the formulas in the docstrings)."""

from __future__ import annotations

import pytest
import torch

from gliclass_core.training.losses import (
    focal_loss,
    gliznet_loss,
    label_repulsion,
    positive_softmax_ce,
    scaled_cosine_bce,
)

# Slot 3 of the first row is padding: its logit is absurd on purpose, so a missing mask shows up.
LOGITS = torch.tensor([[2.0, -1.0, 50.0]])
TARGETS = torch.tensor([[1.0, 0.0, 0.0]])
MASK = torch.tensor([[True, True, False]])


def test_focal_loss_matches_hand_computation() -> None:
    # slot 1: p = σ(2) = 0.880797, BCE = 0.126928, (1 - p_t)² = 0.014209, α_t = 0.25 -> 0.000451
    # slot 2: p = σ(-1) = 0.268941, BCE = 0.313262, (1 - p_t)² = 0.072329, α_t = 0.75 -> 0.016993
    loss = focal_loss(LOGITS, TARGETS, MASK, alpha=0.25, gamma=2.0)
    assert loss.item() == pytest.approx(0.0087222169, rel=1e-6)


def test_focal_loss_with_alpha_and_gamma_off_is_plain_bce() -> None:
    loss = focal_loss(LOGITS, TARGETS, MASK, alpha=-1, gamma=-1)
    assert loss.item() == pytest.approx((0.126928 + 0.313262) / 2, rel=1e-5)
    assert loss.item() == pytest.approx(0.2200948493, rel=1e-6)


def test_focal_loss_accepts_soft_targets() -> None:
    # -(0.7 ln σ(0.3) + 0.3 ln(1 - σ(0.3)))
    loss = focal_loss(
        torch.tensor([[0.3]]), torch.tensor([[0.7]]), torch.tensor([[True]]), alpha=-1, gamma=-1
    )
    assert loss.item() == pytest.approx(0.6443552445, rel=1e-6)


def test_focal_loss_is_independent_of_padding_amount() -> None:
    wide_logits = torch.cat([LOGITS, torch.full((1, 5), -7.0)], dim=1)
    wide_targets = torch.cat([TARGETS, torch.ones(1, 5)], dim=1)
    wide_mask = torch.cat([MASK, torch.zeros(1, 5, dtype=torch.bool)], dim=1)
    narrow = focal_loss(LOGITS, TARGETS, MASK)
    wide = focal_loss(wide_logits, wide_targets, wide_mask)
    assert wide.item() == pytest.approx(narrow.item(), rel=1e-6)


def test_positive_softmax_ce_averages_over_positives_then_samples() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.5, -0.5, 9.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # row 1: lse(2,1,0) = 2.407606; (0.407606 + 1.407606) / 2 = 0.907606
    # row 2: lse(0.5,-0.5) = 0.813262; -log softmax(-0.5) = 1.313262 (the padded 9.0 must not count)
    loss = positive_softmax_ce(logits, targets, mask)
    assert loss.item() == pytest.approx(1.1104338260, rel=1e-6)


def test_positive_softmax_ce_skips_samples_without_positives() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [3.0, 1.0, 0.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert positive_softmax_ce(logits, targets, mask).item() == pytest.approx(0.9076059644, rel=1e-6)


def test_label_repulsion_penalises_pairs_above_threshold() -> None:
    # cos(l1,l2) = 0.8, cos(l1,l3) = 0, cos(l2,l3) = 0.6 -> (0.5 + 0 + 0.3) / 3; padded 4th vector ignored
    vectors = torch.tensor([[[2.0, 0.0], [0.8, 0.6], [0.0, 3.0], [1.0, 0.0]]])
    mask = torch.tensor([[True, True, True, False]])
    assert label_repulsion(vectors, mask, threshold=0.3).item() == pytest.approx(0.8 / 3, rel=1e-6)


def test_label_repulsion_is_zero_with_a_single_label() -> None:
    vectors = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert label_repulsion(vectors, torch.tensor([[True, False]])).item() == 0.0


def test_scaled_cosine_bce_clamps_the_scale() -> None:
    cosine = torch.tensor([[0.5, -0.2]])
    targets = torch.tensor([[1.0, 0.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # scale 20 -> 10: (-ln σ(5) - ln(1 - σ(-2))) / 2
    assert scaled_cosine_bce(cosine, targets, mask, torch.tensor(20.0)).item() == pytest.approx(
        0.0668216798, rel=1e-6
    )
    # scale 0.01 -> 0.1
    assert scaled_cosine_bce(cosine, targets, mask, torch.tensor(0.01)).item() == pytest.approx(
        0.6758284139, rel=1e-6
    )


def test_gliznet_loss_is_the_weighted_sum_of_its_parts() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    cosine = torch.tensor([[0.5, -0.2, 0.1]])
    vectors = torch.tensor([[[2.0, 0.0], [0.8, 0.6], [0.0, 3.0]]])
    targets = torch.tensor([[1.0, 1.0, 0.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    scale = torch.tensor(10.0, requires_grad=True)
    parts = gliznet_loss(logits, cosine, vectors, targets, mask, scale)
    assert parts.ce.item() == pytest.approx(0.9076059644, rel=1e-6)
    assert parts.repulsion.item() == pytest.approx(0.8 / 3, rel=1e-6)
    expected = parts.ce + 0.1 * parts.repulsion + parts.bce
    assert parts.total.item() == pytest.approx(expected.item(), rel=1e-6)
    parts.total.backward()
    assert scale.grad is not None and scale.grad.item() != 0.0  # the BCE scale is learnable
