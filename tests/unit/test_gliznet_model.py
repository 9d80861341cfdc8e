"""GliZNet: input layout, truncation, label chunking, the scoring formula, save/load, the model contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.training import tiny_encoder_dir

from gliclass_core.errors import CheckpointError, InvalidInput
from gliclass_core.gliznet_classifier import GliZNetClassifier
from gliclass_core.modeling.gliznet import GliZNet
from gliclass_core.modeling.gliznet_format import is_gliznet_config, is_gliznet_dir
from gliclass_core.processing.gliznet_packing import LAB_TOKEN
from gliclass_core.types import ClassifyItem, Example

LABELS = ["sport", "finance", "home cooking"]


@pytest.fixture(scope="module")
def net() -> GliZNet:
    torch.manual_seed(0)
    model = GliZNet.from_encoder(tiny_encoder_dir(), projected_dim=16)
    model.model.eval()
    return model


def ids(net: GliZNet, text: str) -> list[int]:
    return list(net.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_pack_layout_is_cls_text_sep_then_label_lab_pairs(net: GliZNet) -> None:
    (p,) = net.pack("The striker scored twice", LABELS)
    lab = net.tokenizer.convert_tokens_to_ids(LAB_TOKEN)
    expected = [net.cls_id, *ids(net, "The striker scored twice"), net.sep_id]
    spans = []
    for label in LABELS:
        start = len(expected)
        expected += ids(net, label)
        spans.append((start, len(expected)))
        expected.append(lab)
    assert list(p.input_ids) == expected
    assert p.payload == tuple(spans)
    assert p.labels == tuple(LABELS) and p.num_labels == 3 and not p.truncated


def test_long_text_is_cut_but_labels_stay_whole(net: GliZNet) -> None:
    (p,) = net.pack("word " * 500, LABELS)
    assert p.truncated
    assert len(p.input_ids) == net.config.max_length
    assert p.labels == tuple(LABELS)
    tail = list(p.input_ids[p.payload[0][0] :])
    assert tail == list(net.pack("short", LABELS)[0].input_ids[-len(tail) :])


def test_labels_that_do_not_fit_go_to_further_passes_in_order(net: GliZNet) -> None:
    labels = [f"label number {i}" for i in range(60)]
    passes = net.pack("a short text", labels)
    assert len(passes) > 1
    assert [lbl for p in passes for lbl in p.labels] == labels
    assert all(len(p.input_ids) <= net.config.max_length for p in passes)


def test_a_label_too_long_for_any_pass_is_an_invalid_input(net: GliZNet) -> None:
    with pytest.raises(InvalidInput) as err:
        net.pack("text", ["ok", "very " * 200])
    assert err.value.field == "labels"


def manual_logits(net: GliZNet, text: str, labels: list[str]) -> torch.Tensor:
    """The GliZNet formula written out from the encoder's hidden states."""
    (p,) = net.pack(text, labels)
    m = net.model
    with torch.no_grad():
        hidden = m.encoder(input_ids=torch.tensor([p.input_ids])).last_hidden_state[0]
        t = m.text_projector(hidden[0])
        if net.config.label_pooling == "lab":
            vecs = [m.label_projector(hidden[e]) for _, e in p.payload]
        else:
            vecs = [m.label_projector(hidden[s:e]).mean(0) for s, e in p.payload]
        cos = torch.stack([F.cosine_similarity(t, v, dim=0) for v in vecs])
        return cos * torch.exp(torch.clamp(m.logit_scale, -10, 10))


def test_logits_are_cosine_times_exp_of_clamped_scale(net: GliZNet) -> None:
    text = "Stocks rallied as bond yields dropped"
    (p,) = net.pack(text, LABELS)
    got = net.forward([p])[0]
    np.testing.assert_allclose(got, manual_logits(net, text, LABELS).numpy(), rtol=1e-4, atol=1e-5)
    assert net.model.logit_scale.item() == pytest.approx(2.0)  # init value
    with torch.no_grad():
        net.model.logit_scale.fill_(25.0)  # clamped to 10
    try:
        np.testing.assert_allclose(
            net.forward([p])[0], manual_logits(net, text, LABELS).numpy(), rtol=1e-4, atol=1e-3
        )
        assert np.abs(net.forward([p])[0]).max() <= np.exp(10) + 1e-3
    finally:
        with torch.no_grad():
            net.model.logit_scale.fill_(2.0)


def test_lab_token_pooling_option_reads_the_marker_state() -> None:
    torch.manual_seed(0)
    lab_net = GliZNet.from_encoder(tiny_encoder_dir(), projected_dim=16, label_pooling="lab")
    lab_net.model.eval()
    text = "Whisk the eggs"
    (p,) = lab_net.pack(text, LABELS)
    np.testing.assert_allclose(
        lab_net.forward([p])[0], manual_logits(lab_net, text, LABELS).numpy(), rtol=1e-4, atol=1e-5
    )


def test_padding_does_not_change_an_items_logits(net: GliZNet) -> None:
    short = net.pack("Tiny", LABELS[:2])[0]
    long = net.pack("A much longer text about many different things " * 3, LABELS)[0]
    alone = net.forward([short])[0]
    batched = net.forward([long, short])[1]
    np.testing.assert_allclose(alone, batched, rtol=1e-4, atol=1e-5)


def test_save_and_load_round_trip(net: GliZNet, tmp_path: Path) -> None:
    net.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gliznet" and is_gliznet_config(config) and is_gliznet_dir(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = GliZNet.from_pretrained(tmp_path)
    passes = net.pack("The match ended 2-1", LABELS)
    np.testing.assert_allclose(loaded.forward(passes)[0], net.forward(passes)[0], rtol=1e-5, atol=1e-6)


def test_loading_something_else_is_a_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "GLiClass"}))
    assert not is_gliznet_dir(tmp_path)
    with pytest.raises(CheckpointError):
        GliZNet.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError):
        GliZNet.from_pretrained(tmp_path / "missing")


def test_classifier_contract_prepare_forward_finish(net: GliZNet, tmp_path: Path) -> None:
    net.save_pretrained(tmp_path)
    clf = GliZNetClassifier.load(tmp_path, "tiny-gliznet", device="cpu")
    assert clf.info.architecture == "gliznet"
    item = ClassifyItem(text="The striker scored", labels=tuple(LABELS), threshold=0.0)
    prepared = clf.prepare(item, index=0)
    logits = clf.forward(list(prepared.passes))
    pred = clf.finish(prepared, logits)
    assert list(pred.scores) == LABELS
    expected = 1 / (1 + np.exp(-net.forward([p.payload for p in prepared.passes])[0]))
    np.testing.assert_allclose([pred.scores[lbl] for lbl in LABELS], expected, rtol=1e-5)
    single = clf.classify(["The striker scored"], LABELS, multi_label=False)[0]
    assert sum(single.scores.values()) == pytest.approx(1.0, rel=1e-5) and len(single.labels) == 1
    with pytest.raises(InvalidInput) as err:
        clf.prepare(ClassifyItem(text="x", labels=("a",), examples=(Example("y", ("a",)),)), index=3)
    assert err.value.field == "examples" and err.value.index == 3
