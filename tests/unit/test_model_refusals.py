"""Checkpoints we cannot run are refused with the reason; the newest GliZNet checkpoint keys load.

- A backbone that needs `trust_remote_code` (its own modelling code: an `auto_map`, or a model_type
  transformers does not know, as third-party GLiClass variants on custom encoders) is refused.
- LLM2Vec-style checkpoints (Qwen2 / Llama / Mistral / Gemma backbones): the reference runs them only
  through `llm2vec`, which cannot be installed beside it (transformers <=4.44.2 against >=5); the
  refusal says exactly that.
- GliZNet config keys `focal_gamma` / `focal_loss_weight` (training loss settings of the authors'
  newest code) load, and the scores stay the authors' pipeline's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gliclass_core import Classifier
from gliclass_core.errors import UnsupportedModel

AUTHORS = Path(__file__).parents[1] / "data" / "gliznet_authors"


@pytest.fixture()
def base(own_checkpoint: Any) -> Path:
    return own_checkpoint("refusals-base", pooling_strategy="first")  # type: ignore[no-any-return]


def _edited(base: Path, tmp_path: Path, top: dict[str, Any], encoder: dict[str, Any]) -> Path:
    path = tmp_path / "ckpt"
    shutil.copytree(base, path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(top)
    cfg["encoder_config"] = {**cfg["encoder_config"], **encoder}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize(
    ("top", "encoder"),
    [
        ({}, {"model_type": "my_custom_bert"}),
        ({}, {"auto_map": {"AutoModel": "modeling_ultrabert.UltraBertModel"}}),
        ({"auto_map": {"AutoModel": "modeling_gliclass.GLiClassModel"}}, {}),
    ],
)
def test_remote_code_backbones_are_refused_naming_trust_remote_code(
    base: Path, tmp_path: Path, top: dict[str, Any], encoder: dict[str, Any]
) -> None:
    with pytest.raises(UnsupportedModel, match="trust_remote_code"):
        Classifier.from_pretrained(str(_edited(base, tmp_path, top, encoder)), device="cpu")


@pytest.mark.parametrize("model_type", ["qwen2", "llama", "mistral", "gemma"])
def test_llm2vec_backbones_are_refused_saying_why(base: Path, tmp_path: Path, model_type: str) -> None:
    path = _edited(base, tmp_path, {}, {"model_type": model_type, "num_hidden_layers": 2})
    with pytest.raises(
        UnsupportedModel, match=r"llm2vec.*transformers>=4\.43\.1,<=4\.44\.2.*transformers>=5"
    ):
        Classifier.from_pretrained(str(path), device="cpu")


@pytest.mark.parametrize("name", ["cosine-mean", "bilinear-lab"])
def test_gliznet_focal_loss_keys_load_with_the_same_scores(tmp_path: Path, name: str) -> None:
    shutil.copytree(AUTHORS / name, tmp_path, dirs_exist_ok=True)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw.update(focal_gamma=2.0, focal_loss_weight=0.5)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    want = json.loads((tmp_path / "expected.json").read_text())
    clf = Classifier.from_pretrained(str(tmp_path), device="cpu")
    got = clf.classify(want["texts"], want["labels"])
    np.testing.assert_allclose([list(p.scores.values()) for p in got], want["multi_label"], atol=1e-5)
