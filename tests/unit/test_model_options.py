"""Every key of the reference's GLiClassModelConfig is either honoured (a parity case sets it) or refused.

The key list is read from the installed reference package, so an option added by a new reference
release fails `test_every_reference_option_is_classified` until it is implemented with a parity
case or refused at load.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import test_model_families as families
import test_model_parity as parity

from gliclass_core import Classifier
from gliclass_core.errors import UnsupportedModel

# Options whose effect a parity case checks: key -> cases setting it away from its default.
HONOURED: dict[str, list[str]] = {
    "hidden_size": ["families:projector-512-silu"],
    "projector_hidden_act": ["families:projector-512-silu"],
    "use_lstm": ["families:lstm-avg", "families:lstm-last-extract", "families:lstm-cross"],
    "scorer_type": ["parity:max-hopfield", "parity:last-weighted-extract", "families:cross-first"],
    "scorer_num_heads": ["families:cross-average-heads8"],
    "scorer_mlp_hidden_size": ["families:cross-average-heads8"],
    "pooling_strategy": ["parity:rms-mlp-extract", "families:cross-first"],
    "class_token_pooling": ["parity:sum-average", "families:cross-average-extract"],
    "normalize_features": ["parity:avg-mlp-norm-average", "families:cross-first-noembed-norm"],
    "extract_text_features": ["parity:rms-mlp-extract", "families:cross-average-extract"],
    "architecture_type": [
        "parity:bi-first-norm",
        "parity:fused-first",
        "encdec:ed-first",
        "encdec:edcls-weighted",
    ],
    "prompt_first": ["parity:first-simple"],
    "squeeze_layers": ["families:squeeze-layer-minus2", "families:bi-lstm-squeeze"],
    "layer_wise": ["families:layer-3"],
    "encoder_layer_id": ["families:layer-3", "families:squeeze-layer-minus2"],
    "embed_class_token": ["parity:absmax-hopfield-noembed", "families:cross-first-noembed-norm"],
    "use_segment_embeddings": ["families:segments-first", "families:segments-cross"],
    "use_calibrator": ["families:calib-uni", "families:calib-bi", "families:calib-fused-bias"],
    "calibrator_hidden_size": ["families:calib-uni-bias-norm"],
    "calibrator_beta_max": ["families:calib-uni-bias-norm"],
    "calibrator_use_bias": ["families:calib-uni-bias-norm", "families:calib-fused-bias"],
}
# Set by the fixture builder in every parity case (backbone, marker ids, vocabulary, label encoder).
BUILDER = {
    "encoder_config": "every case; other encoder families in test_model_encoders.py",
    "encoder_model": "every case (the backbone's source; weights come from the checkpoint)",
    "label_model_config": "bi-encoder cases",
    "label_model_name": "bi-encoder cases",
    "class_token_index": "every marker case",
    "text_token_index": "every marker case",
    "example_token_index": "every marker case (examples in CASES)",
    "vocab_size": "every marker case (resized for the markers)",
}
# Training-only (or decoder-kv-only) options: families:inert-options sets them all, scores unchanged.
INERT = (
    "ignore_index initializer_range max_num_classes focal_loss_alpha focal_loss_gamma "
    "focal_loss_reduction logit_scale_init_value max_labels_alloc contrastive_loss_coef dropout "
    "scorer_attn_dropout scorer_encoder_num_layers scorer_full_sequence recurrent_steps "
    "recurrent_min_steps recurrent_inference recurrent_inference_max_steps recurrent_halt_threshold "
    "recurrent_improvement_coef recurrent_improvement_margin recurrent_bptt_steps recurrent_read_text "
    "recurrent_confidence_coef recurrent_confidence_mode recurrent_confidence_margin calibrator_dropout "
    "freeze_media_encoders use_embedding_projection problem_type"
).split()
CROSS = {"pooling_strategy": "pass", "scorer_type": "cross-attn"}
# Values refused at load, each with the words the error must contain.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"multimodal": True}, "multimodal"),
    ({"architecture_type": "decoder-kv"}, "decoder-kv"),
    ({"architecture_type": "encoder-decoder"}, "needs an encoder-decoder encoder_config"),  # a BERT
    ({"architecture_type": "encoder-decoder-cls"}, "needs an encoder-decoder encoder_config"),
    ({"scorer_type": "decoder-kv"}, "decoder-kv"),
    ({"squeeze_layers": True}, "squeeze_layers"),
    ({"scorer_type": "cross-attn"}, "cross-attn"),
    ({"pooling_strategy": "pass"}, "pass"),
    ({**CROSS, "use_calibrator": True}, "use_calibrator"),
    ({**CROSS, "architecture_type": "bi-encoder"}, "bi-encoder"),
]  # fmt: skip
REFUSED_ONLY = {"multimodal"}


def _reference_keys() -> dict[str, Any]:
    gliclass = pytest.importorskip("gliclass")
    params = inspect.signature(gliclass.GLiClassModelConfig.__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "kwargs")}


def _case(ref: str) -> dict[str, Any]:
    source, name = ref.split(":", 1)
    tables = {"families": families.FAMILIES, "encdec": families.ENCODER_DECODERS}
    table = tables.get(source) or {**parity.UNI, **parity.BI}
    assert name in table, f"{ref}: no such parity case"
    return table[name]


def test_every_reference_option_is_classified() -> None:
    keys = set(_reference_keys())
    groups = [set(HONOURED), set(BUILDER), set(INERT), REFUSED_ONLY]
    assert sum(len(g) for g in groups) == len(set().union(*groups)), "a key is classified twice"
    unclassified = keys - set().union(*groups)
    assert not unclassified, f"reference options neither honoured nor refused: {sorted(unclassified)}"
    assert not set().union(*groups) - keys, "classified keys the reference no longer has"


def test_honoured_options_have_a_parity_case_setting_them() -> None:
    defaults = _reference_keys()
    for key, refs in HONOURED.items():
        for ref in refs:
            case = _case(ref)
            assert key in case and case[key] != defaults[key], f"{ref} does not set {key}"
    inert = families.FAMILIES["inert-options"]
    for key in INERT:
        assert key in inert and inert[key] != defaults[key], f"inert-options does not set {key}"


@pytest.fixture()
def base(own_checkpoint) -> Path:
    return own_checkpoint("options-base", pooling_strategy="first")


@pytest.mark.parametrize(("changes", "words"), REFUSED)
def test_refused_options_fail_at_load_naming_them(base: Path, tmp_path: Path, changes, words) -> None:
    path = tmp_path / "ckpt"
    shutil.copytree(base, path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    if cfg.get("architecture_type", "").startswith("bi"):
        cfg["label_model_config"] = cfg["encoder_config"]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModel, match=words):
        Classifier.from_pretrained(str(path), device="cpu")


@pytest.mark.parametrize(
    ("encoder", "words"),
    [
        ({"model_type": "llama", "hidden_size": 384, "num_hidden_layers": 2}, "causal decoder.*llm2vec"),
        ({"model_type": "qwen2", "hidden_size": 384}, "causal decoder"),
        ({"model_type": "gpt2"}, "causal decoder"),
        ({"model_type": "mistral", "auto_map": {"AutoModel": "llm2vec.BiModel"}}, "own modelling code"),
        ({"model_type": "bert", "is_decoder": True}, "decoder"),
    ],
)  # fmt: skip
def test_decoder_backbones_are_refused_not_run_causally(
    base: Path, tmp_path: Path, encoder: dict[str, Any], words: str
) -> None:
    path = tmp_path / "ckpt"
    shutil.copytree(base, path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["encoder_config"] = {**cfg["encoder_config"], **encoder}
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModel, match=words):
        Classifier.from_pretrained(str(path), device="cpu")
