"""Parity for the model families beyond the basic heads: cross-attn, segment embeddings, calibrator,
LSTM, layer selection.

Each checkpoint is written by the reference package (tests/fixtures/reference.py) on the MiniLM
backbone with large random heads. Ours must give the reference pipeline's probabilities at batch
size 1 within 1e-5 (and close logits), and a batch of mixed items must equal the items alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fixtures.reference import reference_outputs

from gliclass_core import Classifier, ClassifyItem, Example

pytestmark = pytest.mark.reference

TEXTS = [
    "One day I will see the world!",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Our team won the championship in overtime last night, and the fans stormed the field to celebrate.",
]
LABELS = ["travel", "personal dreams", "sport", "science fiction", "politics", "finance and economy"]
SINGLE_TOKEN_LABELS = ["travel", "dreams", "sport", "science", "politics", "finance"]
PROMPT = "Classify the topic of this text:"
EXAMPLES = [
    {"text": "I love hiking in the Alps.", "labels": ["travel"]},
    {"text": "Bitcoin dropped 10% today.", "labels": ["finance and economy", "politics"]},
]
CASES: list[dict[str, Any]] = [{}, {"prompt": PROMPT, "examples": EXAMPLES}]

CROSS = dict(pooling_strategy="pass", scorer_type="cross-attn")
# name -> reference config overrides (uni-encoder unless stated).
FAMILIES: dict[str, dict[str, Any]] = {
    # multilingual-style: cross-attn over the text tokens, with every class-token pooling
    "cross-first": dict(CROSS, class_token_pooling="first", prompt_first=True),
    "cross-average-extract": dict(
        CROSS, class_token_pooling="average", extract_text_features=True, prompt_first=True
    ),
    "cross-first-noembed-norm": dict(
        CROSS, embed_class_token=False, normalize_features=True, prompt_first=False
    ),
    "cross-average-heads8": dict(
        CROSS, class_token_pooling="average", scorer_num_heads=8, scorer_mlp_hidden_size=256,
        prompt_first=False,
    ),
    # instruct-style: label / text / example segment embeddings
    "segments-first": dict(use_segment_embeddings=True, pooling_strategy="first", prompt_first=True),
    "segments-avg-average": dict(
        use_segment_embeddings=True, pooling_strategy="avg", class_token_pooling="average", prompt_first=False
    ),
    "segments-cross": dict(
        CROSS, use_segment_embeddings=True, class_token_pooling="average", prompt_first=True
    ),
    # calibrator on each architecture, with and without its bias
    "calib-uni": dict(use_calibrator=True, pooling_strategy="first", scorer_type="mlp", prompt_first=True),
    "calib-uni-bias-norm": dict(
        use_calibrator=True, calibrator_use_bias=True, calibrator_hidden_size=64, calibrator_beta_max=5.0,
        pooling_strategy="avg", normalize_features=True,
    ),
    "calib-bi": dict(use_calibrator=True, architecture_type="bi-encoder", pooling_strategy="first"),
    "calib-fused-bias": dict(
        use_calibrator=True, calibrator_use_bias=True, architecture_type="bi-encoder-fused",
        pooling_strategy="first", prompt_first=True,
    ),
    # projector width other than the encoder's, another activation
    "projector-512-silu": dict(hidden_size=512, projector_hidden_act="silu", pooling_strategy="avg"),
    # LSTM over the text tokens
    "lstm-avg": dict(use_lstm=True, pooling_strategy="avg", prompt_first=True),
    "lstm-last-extract": dict(use_lstm=True, pooling_strategy="last", extract_text_features=True),
    "lstm-max-average-extract": dict(
        use_lstm=True, pooling_strategy="max", class_token_pooling="average", extract_text_features=True,
        prompt_first=True,
    ),
    "lstm-cross": dict(CROSS, use_lstm=True, prompt_first=False),
    # one hidden layer instead of the last (layer_wise is a training mode; squeeze unused with a layer id)
    "layer-3": dict(layer_wise=True, encoder_layer_id=3, pooling_strategy="first", prompt_first=True),
    "squeeze-layer-minus2": dict(
        squeeze_layers=True, encoder_layer_id=-2, pooling_strategy="avg", class_token_pooling="average"
    ),
    # options that only shape training (or decoder-kv) set away from their defaults: same scores
    "inert-options": dict(
        pooling_strategy="first", prompt_first=True, ignore_index=-1, initializer_range=0.5,
        max_num_classes=7, focal_loss_alpha=0.9, focal_loss_gamma=1, focal_loss_reduction="sum",
        logit_scale_init_value=9.0, max_labels_alloc="fixed", contrastive_loss_coef=0.5, dropout=0.3,
        scorer_attn_dropout=0.4, scorer_encoder_num_layers=3, scorer_full_sequence=True,
        recurrent_steps=3, recurrent_min_steps=2, recurrent_inference=False,
        recurrent_inference_max_steps=4, recurrent_halt_threshold=0.2, recurrent_improvement_coef=0.3,
        recurrent_improvement_margin=0.1, recurrent_bptt_steps=2, recurrent_read_text=True,
        recurrent_confidence_coef=0.1, recurrent_confidence_mode="absolute",
        recurrent_confidence_margin=0.1, calibrator_dropout=0.5, freeze_media_encoders=False,
        use_embedding_projection=False, problem_type="regression",
    ),
    # bi-encoders save (but never read) LSTM and layer-attention weights
    "bi-lstm-squeeze": dict(
        architecture_type="bi-encoder", pooling_strategy="first", use_lstm=True, squeeze_layers=True,
        use_segment_embeddings=True,
    ),
}  # fmt: skip


# T5-style encoder-decoders on a tiny random T5 (reference.TINY["t5"]).
ENCODER_DECODERS: dict[str, dict[str, Any]] = {
    "ed-first": dict(architecture_type="encoder-decoder", pooling_strategy="first"),
    "ed-avg-average-mlp": dict(
        architecture_type="encoder-decoder", pooling_strategy="avg", class_token_pooling="average",
        scorer_type="mlp",
    ),
    "ed-max-average-extract-norm": dict(
        architecture_type="encoder-decoder", pooling_strategy="max", class_token_pooling="average",
        extract_text_features=True, normalize_features=True, embed_class_token=False,
    ),
    "ed-calibrated": dict(
        architecture_type="encoder-decoder", pooling_strategy="first", use_calibrator=True,
        calibrator_use_bias=True,
    ),
    "edcls-weighted": dict(architecture_type="encoder-decoder-cls", scorer_type="weighted-dot"),
    # Not hopfield: for encoder-decoders the reference always scores config.max_num_classes (25) label
    # slots and hopfield's softmax over labels then includes the empty ones; ours masks them.
    "edcls-average-mlp-prompt-last": dict(
        architecture_type="encoder-decoder-cls", class_token_pooling="average", scorer_type="mlp",
        prompt_first=True,
    ),
}  # fmt: skip


def _labels(overrides: dict[str, Any]) -> list[str]:
    # The reference pools bi-encoder labels over their batch's padding; single-token labels have none.
    if overrides.get("architecture_type", "uni-encoder").startswith("bi") and overrides.get(
        "pooling_strategy"
    ) not in (None, "first"):
        return SINGLE_TOKEN_LABELS
    return LABELS


def _items(labels: list[str], case: dict[str, Any]) -> list[ClassifyItem]:
    examples = tuple(Example(e["text"], tuple(e["labels"])) for e in case.get("examples", []))
    return [ClassifyItem(t, tuple(labels), prompt=case.get("prompt"), examples=examples) for t in TEXTS]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_parity_and_batch_invariance(reference_checkpoint, name: str) -> None:
    _check(reference_checkpoint(f"family-{name}", **FAMILIES[name]), FAMILIES[name])


@pytest.mark.parametrize("name", sorted(ENCODER_DECODERS))
def test_encoder_decoder_parity_and_batch_invariance(
    reference_checkpoint, tiny_encoder_dir, name: str
) -> None:
    overrides = ENCODER_DECODERS[name]
    _check(reference_checkpoint(f"family-{name}", encoder=tiny_encoder_dir("t5"), **overrides), overrides)


def _check(directory, overrides: dict[str, Any]) -> None:
    labels = _labels(overrides)
    clf = Classifier.from_pretrained(str(directory), device="cpu")
    calibrated = bool(overrides.get("use_calibrator"))
    assert clf.network.calibrator is not None if calibrated else clf.network.calibrator is None
    refs = reference_outputs(directory, TEXTS, labels, CASES)
    alone_all = []
    for case, ref in zip(CASES, refs):
        items = _items(labels, case)
        alone = [clf.forward(clf.prepare(item).passes)[0] for item in items]
        alone_all += alone
        ours = np.array([a[0] if calibrated else a for a in alone], dtype=np.float64)
        expected = np.array(ref["logits"], dtype=np.float64)
        assert np.ptp(expected) > 0.01  # logits differ across labels and texts: not a constant model
        assert np.abs(_sigmoid(ours) - _sigmoid(expected)).max() < 1e-5
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
        preds = clf.classify(
            TEXTS, labels, prompt=case.get("prompt"), examples=list(items[0].examples), batch_size=8
        )
        got = np.array([[p.scores[label] for label in labels] for p in preds])
        assert np.abs(got - _sigmoid(expected)).max() < 1e-5
        if calibrated:
            raw = np.array([a[1] for a in alone], dtype=np.float64)
            np.testing.assert_allclose(raw, np.array(ref["uncalibrated"]), rtol=1e-4, atol=1e-4)
            assert np.abs(raw - ours).max() > 1e-3  # the calibrator changes something
            unc = np.array([[p.uncalibrated_scores[label] for label in labels] for p in preds])
            assert np.abs(unc - _sigmoid(np.array(ref["uncalibrated"]))).max() < 1e-5
        else:
            assert all(p.uncalibrated_scores is None for p in preds)
    # One padded batch holding every item of both cases (different lengths, prompts, examples),
    # forwards and backwards, equals each item alone.
    passes = [p for case in CASES for item in _items(labels, case) for p in clf.prepare(item).passes]
    for order in (1, -1):
        together = clf.forward(passes[::order])[::order]
        for a, b in zip(alone_all, together):
            assert a.shape == b.shape
            np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-5)
            assert np.abs(_sigmoid(a) - _sigmoid(b)).max() < 1e-5
