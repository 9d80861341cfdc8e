"""The opt-in ONNX Runtime engine: export parity, cache keys, int8, refusals, config.

Real exports and real ONNX Runtime sessions throughout: a tiny random BERT for the exporter and
cache (fast), the MiniLM checkpoints for end-to-end scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from fixtures.models import write_checkpoint

from gliclass_core import Classifier
from gliclass_core.config import ConfigError, parse_config
from gliclass_core.errors import InvalidInput, UnsupportedModel
from gliclass_core.modeling import fast_bert, onnx_engine, onnx_export
from gliclass_core.modeling.onnx_engine import OnnxEncoder, length_groups

LABELS = ["billing", "bug report", "sports", "travel"]
TEXTS = [
    "My card was charged twice",
    "The app crashes on start and I lose my work every single time I open a large file " * 3,
    "We won the final",
    "Our flight was cancelled and the airline will not refund the hotel we booked near the beach. " * 5,
    "refund",
]


@pytest.fixture
def onnx_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private export cache (onnx_export.cache_dir) for tests that count builds."""
    monkeypatch.setattr(onnx_export, "cache_dir", lambda: tmp_path / "onnx")
    return tmp_path / "onnx"


def tiny_bert(seed: int = 0) -> Any:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    return BertModel(cfg).eval()


def scores(clf: Classifier, texts: list[str], labels: list[str], **kw: Any) -> np.ndarray:
    return np.array([[p.scores[k] for k in labels] for p in clf.classify(texts, labels, **kw)])


def test_export_matches_torch_on_shapes_it_was_not_traced_at(onnx_cache: Path) -> None:
    model = tiny_bert()
    path, built = onnx_export.ensure_export(model, "float32")
    assert built and path.parent == onnx_cache
    engine = OnnxEncoder(model, path)
    ids = torch.randint(5, 100, (5, 23))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[3, 17:] = 0
    with torch.inference_mode():
        want = fast_bert.bert_forward(model, ids, mask)
        got = engine(ids, mask)
        real = mask.bool()
        torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)
        # Only some positions read (the last layer computes just those), including duplicates.
        keep = torch.tensor([[0, 1, 2]] * 5)
        keep[1] = torch.tensor([0, 3, 3])
        pruned = engine(ids, mask, keep=keep)
        rows = torch.arange(5).unsqueeze(1)
        torch.testing.assert_close(pruned[rows, keep], want[rows, keep], atol=1e-5, rtol=1e-5)


def test_length_groups_cover_every_row_once_and_split_far_apart_lengths() -> None:
    lengths = [10, 400, 12, 380, 100, 105, 11]
    groups = length_groups(lengths)
    rows = sorted(r for group, _ in groups for r in group)
    assert rows == list(range(len(lengths)))
    for group, width in groups:
        assert width == max(lengths[r] for r in group)
    assert len(groups) > 1 and not any({1, 0} <= set(g) for g, _ in groups)  # 400 and 10 never share
    assert length_groups([64] * 32) == [(list(range(32)), 64)]  # equal lengths: one run


def test_cache_is_reused_and_rebuilt_when_weights_or_exporter_change(
    onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_bert()
    first, built = onnx_export.ensure_export(model, "float32")
    stamp = first.stat().st_mtime_ns
    again, built_again = onnx_export.ensure_export(tiny_bert(), "float32")  # same content, new object
    assert built and not built_again and again == first and first.stat().st_mtime_ns == stamp
    changed = tiny_bert()
    with torch.no_grad():
        changed.encoder.layer[0].output.dense.weight[0, 0] += 1.0
    other, built_other = onnx_export.ensure_export(changed, "float32")
    assert built_other and other != first
    monkeypatch.setattr(onnx_export, "EXPORTER_VERSION", onnx_export.EXPORTER_VERSION + "-next")
    newer, built_newer = onnx_export.ensure_export(model, "float32")
    assert built_newer and newer not in (first, other)
    assert not list(onnx_cache.glob(".*"))  # no temporary files left behind


def test_int8_export_quantises_the_linear_layers_only(onnx_cache: Path) -> None:
    import onnx

    model = tiny_bert()
    ids = torch.randint(5, 100, (6, 20))
    calibration = onnx_export.Calibration(ids, torch.ones_like(ids))
    path, built = onnx_export.ensure_export(model, "int8", calibration)
    assert built and path.name.endswith("-int8.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    # 3 weight matrices per layer (fused QKV, attention output, FFN up) become int8; the FFN
    # down-projection (onnx_export.INT8_KEEP_FP32), q.k and p.v stay fp32.
    assert ops.count("MatMulInteger") == 3 * len(model.encoder.layer)
    assert ops.count("MatMul") == 3 * len(model.encoder.layer)
    with torch.inference_mode():
        want = fast_bert.bert_forward(model, ids, torch.ones_like(ids))
        got = OnnxEncoder(model, path)(ids, torch.ones_like(ids))
    cos = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    assert float(cos.min()) > 0.95 and not torch.equal(got, want)


def test_builtin_onnx_fp32_matches_torch_on_mixed_lengths(builtin_classifier: Classifier) -> None:
    clf = Classifier.from_pretrained("builtin:minilm", engine="onnx")
    assert clf.info.dtype == "float32" and clf.info.extra["engine"] == "onnx" and clf.device == "cpu"
    want = scores(builtin_classifier, TEXTS, LABELS)
    np.testing.assert_allclose(scores(clf, TEXTS, LABELS), want, atol=1e-5)
    alone = np.concatenate([scores(clf, [t], LABELS) for t in TEXTS])
    np.testing.assert_allclose(alone, want, atol=1e-5)  # batch-invariant, as on torch
    single = scores(clf, TEXTS, LABELS, multi_label=False)
    np.testing.assert_allclose(
        single, scores(builtin_classifier, TEXTS, LABELS, multi_label=False), atol=1e-5
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"pooling_strategy": "first"},  # last layer only at the head's positions
        {"pooling_strategy": "avg", "class_token_pooling": "average", "extract_text_features": True},
        {"architecture_type": "bi-encoder-fused", "pooling_strategy": "avg"},
    ],
    ids=["uni-first", "uni-avg-spans", "fused"],
)
def test_gliclass_architectures_match_torch(tmp_path: Path, gliclass_cache: Path, overrides: dict) -> None:
    ckpt = write_checkpoint(tmp_path / "ckpt", **overrides)
    torch_clf = Classifier.from_pretrained(str(ckpt), device="cpu")
    onnx_clf = Classifier.from_pretrained(str(ckpt), engine="onnx", dtype="float32")
    np.testing.assert_allclose(scores(onnx_clf, TEXTS, LABELS), scores(torch_clf, TEXTS, LABELS), atol=1e-5)


def test_int8_reports_its_agreement_at_build_and_reuses_it(
    gliclass_cache: Path, builtin_classifier: Classifier, capfd: pytest.CaptureFixture[str]
) -> None:
    clf = Classifier.from_pretrained("builtin:minilm", engine="onnx", dtype="int8")
    err = capfd.readouterr().err
    assert clf.info.dtype == "int8"
    reports = list((onnx_export.cache_dir()).glob("agreement-*int8*.json"))
    assert reports, "the agreement measured at build time is kept beside the export"
    report = json.loads(reports[0].read_text())
    assert 0.0 < report["max_abs_diff"] < 0.5 and report["top1_agreement"] >= 0.8
    if "int8" in err:  # printed when this process built it (an earlier test may have)
        assert "top-1 agreement" in err and "max |delta score|" in err
    Classifier.from_pretrained("builtin:minilm", engine="onnx", dtype="int8")
    assert "int8 vs torch" not in capfd.readouterr().err  # cache hit: nothing rebuilt or re-measured
    clear = ["I was charged twice for my subscription, please refund me", "The Lakers won the game"]
    got, want = scores(clf, clear, LABELS), scores(builtin_classifier, clear, LABELS)
    assert list(got.argmax(1)) == list(want.argmax(1)) == [0, 2]
    assert 0 < np.abs(got - want).max() < 0.2


def test_refusals_are_clear() -> None:
    with pytest.raises(InvalidInput, match="int8"):
        onnx_engine.resolve_engine("torch", "int8", "cpu")
    with pytest.raises(InvalidInput, match="engine"):
        onnx_engine.resolve_engine("tvm", None, "cpu")
    with pytest.raises(InvalidInput, match="float32 or int8"):
        onnx_engine.resolve_engine("onnx", "bf16", "cpu")
    with pytest.raises(UnsupportedModel, match="CPU only"):
        onnx_engine.resolve_engine("onnx", None, "cuda:0")
    assert onnx_engine.resolve_engine("onnx", None, "auto") == ("onnx", "float32")
    assert onnx_engine.resolve_engine(None, None, "cpu") == ("torch", None)


def test_unsupported_encoders_and_options_are_refused() -> None:
    from gliclass_core.modeling.config import parse_config as parse_model_config
    from gliclass_core.modeling.heads import GLiClassNetwork

    deberta = {"model_type": "deberta-v2", "hidden_size": 32, "num_hidden_layers": 1,
               "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 100}  # fmt: skip
    raw = {"model_type": "GLiClass", "architecture_type": "uni-encoder", "hidden_size": 32,
           "encoder_config": deberta, "class_token_index": 97, "text_token_index": 98,
           "example_token_index": 99}  # fmt: skip
    with pytest.raises(UnsupportedModel, match=r"BERT-family.*deberta-v2"):
        onnx_engine.check_supported(GLiClassNetwork(parse_model_config(raw)))
    bert = {**deberta, "model_type": "bert"}
    layered = GLiClassNetwork(parse_model_config({**raw, "encoder_config": bert, "encoder_layer_id": 0}))
    with pytest.raises(UnsupportedModel, match="last layer"):
        onnx_engine.check_supported(layered)


def test_config_engine_key() -> None:
    cfg = parse_config({"model": {"engine": "onnx", "dtype": "int8", "device": "cpu"}})
    assert cfg.model.engine == "onnx" and cfg.model.dtype == "int8"
    assert parse_config({}).model.engine == "torch"
    for bad, match in [
        ({"engine": "tvm"}, "engine"),
        ({"dtype": "int8"}, "int8"),
        ({"engine": "onnx", "dtype": "bf16"}, "float32"),
        ({"engine": "onnx", "device": "cuda:0"}, "CPU"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_config({"model": bad})
