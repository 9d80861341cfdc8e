"""decoder-kv checkpoints: parity with the reference's DecoderKVZeroShotClassificationPipeline, and refusals.

Checkpoints are tiny random Qwen3 / hybrid Qwen3.5 decoders and a text-only bidirectional
EmbeddingGemma 2 encoder (no KV cache), written by the reference package's own save_pretrained
(tests/fixtures/decoder_kv.py). Every key of the reference's config is classified for
decoder-kv: honoured (a parity case sets it), inert (the reference's decoder-kv path never reads it:
one case sets them all and matches), or refused by name.
"""

from __future__ import annotations

import inspect
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures import decoder_kv as dk
from fixtures import reference

from gliclass_core import Classifier, ClassifyItem, Example
from gliclass_core.decoder_kv_classifier import DecoderKVClassifier
from gliclass_core.errors import CheckpointError, InvalidInput, UnsupportedModel
from gliclass_core.modeling.decoder_kv_config import INERT_KEYS

pytestmark = pytest.mark.reference

TEXTS = [
    "One day I will see the world!",
    "The stock market fell sharply after the central bank raised interest rates.",
    "ok",
    "Our team won the championship in overtime last night, and the fans stormed the field to celebrate.",
]
LABELS = ["travel", "personal dreams", "sport", "science fiction", "finance and economy"]
PROMPT = "Classify the topic of this text:"
EXAMPLES = [
    {"text": "I love hiking in the Alps.", "labels": ["travel"]},
    {"text": "Bitcoin dropped 10% today.", "labels": ["finance and economy", "sport"]},
]
# Every inert key set away from its default at once: scores must not move.
INERT_VALUES: dict[str, Any] = dict(
    ignore_index=-1, initializer_range=0.5, max_num_classes=3, focal_loss_alpha=0.9, focal_loss_gamma=5,
    focal_loss_reduction="sum", logit_scale_init_value=9.0, max_labels_alloc="fixed",
    contrastive_loss_coef=1.0,
    dropout=0.5, scorer_attn_dropout=0.5, scorer_full_sequence=True, recurrent_min_steps=2,
    recurrent_halt_threshold=0.5, recurrent_improvement_coef=0.5, recurrent_improvement_margin=0.5,
    recurrent_bptt_steps=2, recurrent_confidence_coef=0.5, recurrent_confidence_mode="absolute",
    recurrent_confidence_margin=0.5, recurrent_read_text=True, recurrent_inference_max_steps=4,
    calibrator_dropout=0.5, freeze_media_encoders=False,
    problem_type="single_label_classification", scorer_type="mlp", scorer_num_heads=2, pooling_strategy="avg",
    class_token_pooling="average", prompt_first=True, embed_class_token=False, extract_text_features=True,
    use_lstm=True, use_segment_embeddings=True, squeeze_layers=True, layer_wise=True, encoder_layer_id=1,
    projector_hidden_act="relu", text_token_index=7, label_model_config={"model_type": "bert"},
    label_model_name="x", calibrator_hidden_size=8, calibrator_beta_max=9.0, calibrator_use_bias=True,
)  # fmt: skip
# name -> (backbone, reference overrides)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen3": ("qwen3", {}),
    "qwen3-norm-deep": (
        "qwen3",
        dict(normalize_features=True, scorer_encoder_num_layers=2, scorer_mlp_hidden_size=32),
    ),
    "qwen3_5-hybrid": ("qwen3_5", {}),
    "qwen3-inert": ("qwen3", INERT_VALUES),
    # The reference builds the recurrent cell's weights but runs one step: they load and stay unused.
    "qwen3-recurrent-off": ("qwen3", dict(recurrent_steps=3, recurrent_inference=False)),
    # EmbeddingGemma 2: the scorer reads the final-norm states (width 64), or with
    # use_embedding_projection the projection (embedding_dim 48, so the scorer is 48 wide).
    "gemma2": ("embedding_gemma2", {}),
    "gemma2-projection": ("embedding_gemma2", dict(use_embedding_projection=True)),
}
BACKBONES = ["qwen3", "qwen3_5-hybrid", "gemma2", "gemma2-projection"]
HONOURED = {
    "normalize_features": "qwen3-norm-deep",
    "scorer_encoder_num_layers": "qwen3-norm-deep",
    "scorer_mlp_hidden_size": "qwen3-norm-deep",
    "encoder_config": "qwen3 / qwen3_5-hybrid / gemma2 (the backbone)",
    "use_embedding_projection": "gemma2-projection (EmbeddingGemma 2 only; other backbones never read it)",
    "encoder_model": "every case (the reference's backbone source; weights come from the checkpoint)",
    "class_token_index": "every case",
    "example_token_index": "every case (examples in a parity case)",
    "vocab_size": "every case (resized for the markers)",
    "hidden_size": "every case (must equal the backbone's, or embedding_dim with the projection)",
    "architecture_type": "every case",
    "recurrent_inference": "qwen3-recurrent-off",
}
# recurrent_steps > 1 only with recurrent_inference (as the reference runs it); otherwise it is inert.
REFUSED = {"multimodal", "use_calibrator", "recurrent_steps"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    if not reference.available():
        pytest.skip("the reference gliclass package is not installed")
    root = tmp_path_factory.mktemp("decoder-kv")
    built: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in built:
            backbone, overrides = CASES[name]
            built[name] = dk.build(root / name, backbone, **overrides)
        return built[name]

    return make


def _ours(clf: Any, texts: list[str], prompt: str | None = None, examples: Any = None) -> np.ndarray:
    shown = tuple(Example(e["text"], tuple(e["labels"])) for e in examples or [])
    items = [ClassifyItem(t, tuple(LABELS), prompt=prompt, examples=shown) for t in texts]
    prepared = clf.prepare_many(items)
    return np.array(clf.forward([p.passes[0] for p in prepared]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_scores_equal_the_reference_pipeline(checkpoint: Callable[[str], Path], name: str) -> None:
    path = checkpoint(name)
    clf = Classifier.from_pretrained(str(path), device="cpu")
    assert isinstance(clf, DecoderKVClassifier)
    expected = np.array(dk.classic_logits(path, TEXTS, LABELS))
    assert np.ptp(expected) > 0.3, "the heads must spread the logits, or a wrong position would go unseen"
    np.testing.assert_allclose(_ours(clf, TEXTS), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", BACKBONES)
def test_prompt_and_examples_match_the_reference(checkpoint: Callable[[str], Path], name: str) -> None:
    path = checkpoint(name)
    clf = Classifier.from_pretrained(str(path), device="cpu")
    expected = np.array(dk.classic_logits(path, TEXTS, LABELS, prompt=PROMPT, examples=EXAMPLES))
    np.testing.assert_allclose(_ours(clf, TEXTS, PROMPT, EXAMPLES), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", BACKBONES)
def test_scores_do_not_depend_on_the_batch(checkpoint: Callable[[str], Path], name: str) -> None:
    clf = Classifier.from_pretrained(str(checkpoint(name)), device="cpu")
    texts = TEXTS * 2
    alone = [p.scores for p in (clf.classify([t], LABELS)[0] for t in texts)]
    together = [p.scores for p in clf.classify(texts, LABELS, batch_size=8)]
    for a, b in zip(alone, together):
        assert max(abs(a[k] - b[k]) for k in LABELS) < 1e-5


def test_a_long_text_keeps_its_beginning_as_the_reference_does(checkpoint: Callable[[str], Path]) -> None:
    path = checkpoint("qwen3")
    text = " ".join(["word", "another", "thing"] * 40)
    clf = Classifier.from_pretrained(str(path), device="cpu", max_length=48)
    expected = np.array(dk.classic_logits(path, [text], LABELS, max_length=48))
    prepared = clf.prepare(ClassifyItem(text, tuple(LABELS)))
    assert prepared.truncated and len(prepared.passes[0].input_ids) == 48
    np.testing.assert_allclose(np.array(clf.forward([prepared.passes[0]])), expected, atol=1e-5, rtol=0)


def test_labels_that_do_not_fit_are_refused_naming_the_field(checkpoint: Callable[[str], Path]) -> None:
    clf = Classifier.from_pretrained(str(checkpoint("qwen3")), device="cpu", max_length=16)
    with pytest.raises(InvalidInput, match="labels"):
        clf.prepare(ClassifyItem("text", tuple(f"label number {i}" for i in range(10))))


def test_every_reference_option_is_classified_for_decoder_kv() -> None:
    gliclass = pytest.importorskip("gliclass")
    params = inspect.signature(gliclass.GLiClassModelConfig.__init__).parameters
    keys = {k for k in params if k not in ("self", "kwargs")}
    groups = [set(HONOURED), set(INERT_KEYS), REFUSED]
    assert sum(len(g) for g in groups) == len(set().union(*groups)), "a key is classified twice"
    assert not keys - set().union(*groups), f"unclassified: {sorted(keys - set().union(*groups))}"
    assert set(INERT_VALUES) == set(INERT_KEYS), "the inert case must set every inert key"
    # The builder's own choices count as the defaults the cases move away from.
    builder = dict(
        problem_type="multi_label_classification", scorer_encoder_num_layers=1, scorer_mlp_hidden_size=64
    )
    defaults = {k: p.default for k, p in params.items()} | builder
    for key, value in INERT_VALUES.items():
        assert value != defaults[key], f"inert case leaves {key} at its default"
    for key, case in HONOURED.items():
        if case in CASES:
            assert CASES[case][1].get(key, defaults[key]) != defaults[key], f"{case} does not set {key}"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"multimodal": True}, "multimodal"),
        ({"use_calibrator": True}, "use_calibrator"),
        ({"recurrent_steps": 3}, "recurrent_steps"),
        ({"encoder_config": {"model_type": "bert", "hidden_size": 64}}, "decoder-kv backbone 'bert'"),
        ({"encoder_config": {"model_type": "embedding_gemma2_text"}}, "'embedding_gemma2_text'.*composite"),
        ({"encoder_config": {"model_type": "qwen3", "auto_map": {"AutoModel": "x.Y"}}}, "trust_remote_code"),
        ({"hidden_size": 32}, "hidden_size"),
    ],
)  # fmt: skip
def test_refused_decoder_kv_options_name_the_key(
    checkpoint: Callable[[str], Path], tmp_path: Path, changes: dict[str, Any], words: str
) -> None:
    path = tmp_path / "ckpt"
    shutil.copytree(checkpoint("qwen3"), path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModel, match=words):
        Classifier.from_pretrained(str(path), device="cpu")


def test_the_scheduler_batches_decoder_kv_items_at_parity(checkpoint: Callable[[str], Path]) -> None:
    from gliclass_core.runtime.batch_forming import BatchPolicy
    from gliclass_core.runtime.scheduler import Scheduler

    path = checkpoint("qwen3")
    clf = Classifier.from_pretrained(str(path), device="cpu")
    scheduler = Scheduler(
        BatchPolicy(max_batch_tokens=1 << 20, max_wait_s=0.01, min_padding_efficiency=0.0), 100
    )
    scheduler.open(clf, replicas=1)
    other = ["sport", "finance and economy"]
    futures = scheduler.submit(
        [ClassifyItem(t, tuple(LABELS)) for t in TEXTS] + [ClassifyItem(TEXTS[1], tuple(other))]
    )
    batch = scheduler.next_batch()
    assert batch is not None and len(batch.entries) == len(TEXTS) + 1  # every item in one padded pass
    scheduler.complete(batch, clf.forward(batch.passes), "cpu")
    got = [f.result(5) for f in futures]
    expected = dk.classic_logits(path, TEXTS, LABELS) + dk.classic_logits(path, [TEXTS[1]], other)
    for prediction, logits in zip(got, expected):
        scores = 1 / (1 + np.exp(-np.array(logits)))
        np.testing.assert_allclose(list(prediction.scores.values()), scores, atol=1e-5)
    scheduler.close(0.1)


def test_embedding_gemma2_pads_a_batch_as_the_reference_masks_it(checkpoint: Callable[[str], Path]) -> None:
    # Bidirectional attention: every token of a row would see the row's padding if the mask let it.
    # Short and long rows padded together must score as the reference scores each alone; and the
    # sliding layer (radius 4) is shorter than every row, so its window is exercised too.
    path = checkpoint("gemma2")
    clf = Classifier.from_pretrained(str(path), device="cpu")
    texts = ["ok", TEXTS[3] + " " + TEXTS[1], "a", TEXTS[0]]
    expected = np.array(dk.classic_logits(path, texts, LABELS, prompt=PROMPT))
    np.testing.assert_allclose(_ours(clf, texts, PROMPT), expected, atol=1e-5, rtol=0)


def test_embedding_gemma2_projection_changes_the_scores(checkpoint: Callable[[str], Path]) -> None:
    # The flag is honoured, not inert: the same backbone read through the projection scores differently.
    plain = Classifier.from_pretrained(str(checkpoint("gemma2")), device="cpu")
    projected = Classifier.from_pretrained(str(checkpoint("gemma2-projection")), device="cpu")
    assert isinstance(plain, DecoderKVClassifier) and isinstance(projected, DecoderKVClassifier)
    assert (plain.network.cfg.hidden_size, projected.network.cfg.hidden_size) == (64, 48)
    assert np.abs(_ours(plain, TEXTS[:1]) - _ours(projected, TEXTS[:1])).max() > 0.1


def test_embedding_gemma2_models_say_they_keep_no_sessions(checkpoint: Callable[[str], Path]) -> None:
    clf = Classifier.from_pretrained(str(checkpoint("gemma2")), device="cpu")
    assert clf.info.extra["sessions"] == "false" and clf.info.extra["backbone"] == "EmbeddingGemma2Model"
    qwen = Classifier.from_pretrained(str(checkpoint("qwen3")), device="cpu")
    assert qwen.info.extra["sessions"] == "true"
    assert isinstance(clf, DecoderKVClassifier)
    with pytest.raises(UnsupportedModel, match="bidirectional encoder without one"):
        clf.network.extend(None, clf.tokens("a text"))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"hidden_size": 64}, "embedding_dim"),  # the projection is read: the scorer is 48 wide
        ({"use_embedding_projection": False}, "hidden_size 48 differs from the backbone's hidden_size 64"),
        ({"multimodal": True}, "multimodal"),
    ],
)
def test_refused_embedding_gemma2_options_name_the_key(
    checkpoint: Callable[[str], Path], tmp_path: Path, changes: dict[str, Any], words: str
) -> None:
    path = tmp_path / "ckpt"
    shutil.copytree(checkpoint("gemma2-projection"), path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModel, match=words):
        Classifier.from_pretrained(str(path), device="cpu")


def test_embedding_gemma2_without_the_flag_follows_the_reference_rule(
    checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    # Older checkpoints lack use_embedding_projection: the reference keeps the projection exactly
    # when hidden_size equals embedding_dim. Here 48 == 48, so the projection is read.
    path = tmp_path / "ckpt"
    shutil.copytree(checkpoint("gemma2-projection"), path)
    cfg = json.loads((path / "config.json").read_text())
    del cfg["use_embedding_projection"]
    (path / "config.json").write_text(json.dumps(cfg))
    clf = Classifier.from_pretrained(str(path), device="cpu")
    np.testing.assert_allclose(_ours(clf, TEXTS), np.array(dk.classic_logits(path, TEXTS, LABELS)), atol=1e-5)


def test_embedding_gemma2_media_towers_are_not_built_or_read(
    checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    # The reference runs text-only decoder-kv: it sets vision_config / audio_config to None and never
    # reads the towers' weights. A checkpoint that still names them scores as the text-only one.
    import torch
    from safetensors.torch import load_file, save_file

    source = checkpoint("gemma2")
    path = tmp_path / "ckpt"
    shutil.copytree(source, path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["encoder_config"]["vision_config"] = {"model_type": "gemma4_vision", "hidden_size": 8}
    (path / "config.json").write_text(json.dumps(cfg))
    weights = load_file(str(path / "model.safetensors"))
    weights["model.decoder_model.vision_tower.patch.weight"] = torch.zeros(1)
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    clf = Classifier.from_pretrained(str(path), device="cpu")
    expected = np.array(dk.classic_logits(source, TEXTS, LABELS))
    np.testing.assert_allclose(_ours(clf, TEXTS), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (lambda enc: enc.pop("text_config"), CheckpointError, "text_config"),
        (lambda enc: enc.update(text_config="x"), CheckpointError, "text_config"),
        (lambda enc: enc["text_config"].update(model_type="gemma3_text"), UnsupportedModel, "gemma3_text"),
        (lambda enc: enc["text_config"].update(hidden_size="wide"), UnsupportedModel, "hidden_size"),
    ],
)
def test_a_malformed_embedding_gemma2_config_is_a_typed_error(
    checkpoint: Callable[[str], Path], tmp_path: Path, change: Callable[[dict[str, Any]], Any],
    error: type[Exception], words: str,
) -> None:  # fmt: skip
    path = tmp_path / "ckpt"
    shutil.copytree(checkpoint("gemma2"), path)
    cfg = json.loads((path / "config.json").read_text())
    change(cfg["encoder_config"])
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(error, match=words):
        Classifier.from_pretrained(str(path), device="cpu")
