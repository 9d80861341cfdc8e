"""The builtin offline model loads, classifies, and materialises a real checkpoint directory."""

from __future__ import annotations

import json
from pathlib import Path

from gliclass_core import ClassifyItem


def test_builtin_is_a_real_checkpoint(builtin_classifier, gliclass_cache: Path) -> None:
    dirs = [p for p in gliclass_cache.iterdir() if p.name.startswith("builtin-minilm")]
    assert len(dirs) == 1
    config = json.loads((dirs[0] / "config.json").read_text())
    assert config["architecture_type"] == "bi-encoder"
    assert (dirs[0] / "model.safetensors").is_file()
    assert builtin_classifier.info.architecture == "bi-encoder"


def test_builtin_prepare_forward_finish(builtin_classifier) -> None:
    item = ClassifyItem(
        text="I was charged twice for my subscription", labels=("billing", "sports", "weather")
    )
    prepared = builtin_classifier.prepare(item, 0)
    assert len(prepared.passes) == 1
    logits = builtin_classifier.forward(prepared.passes)
    pred = builtin_classifier.finish(prepared, logits)
    assert list(pred.scores) == ["billing", "sports", "weather"]
    assert pred.labels[0] == "billing"
    assert pred.scores["billing"] > 0.5 > pred.scores["sports"]
