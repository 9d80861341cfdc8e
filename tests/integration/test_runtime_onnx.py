"""The runtime (scheduler + pool + replica threads) on the ONNX engine, as gRPC and Kafka use it.

Same batching contract as torch: mixed lengths and label sets form length-grouped batches, two CPU
replicas each run their own ONNX Runtime session, results equal the offline `classify` on the same
engine and the torch engine's within fp32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from gliclass_core import Classifier, ClassifyItem
from gliclass_core.config import AppConfig, BatchingConfig, ModelConfig
from gliclass_core.runtime import Priority, Runtime

LABELS = ("billing", "bug report", "feature request")
OTHER = ("sports", "politics", "travel", "food")
TEXTS = [
    "My card was charged twice",
    "The app crashes every time I open the settings page after the last update, and support is silent. " * 4,
    "Please add a dark mode",
    "Our team won the championship in overtime last night and the whole city celebrated until dawn. " * 8,
    "refund",
    "The minister resigned after the vote",
]


def test_scheduler_batches_on_the_onnx_engine_match_offline(gliclass_cache, builtin_classifier) -> None:
    config = AppConfig(
        model=ModelConfig(id="builtin:minilm", device="cpu", replicas_per_device=2, engine="onnx"),
        batching=BatchingConfig(max_batch_size=16, max_batch_tokens=4096, max_wait_ms=5, max_queue=1000),
    )
    rt = Runtime.from_config(config)  # the real loader: Classifier.from_pretrained(..., engine="onnx")
    rt.start()
    try:
        assert rt.wait_ready(300), rt.error
        assert rt.info.dtype == "float32" and all(r.classifier is not None for r in rt.pool.replicas)
        engine = rt.pool.classifier
        assert engine is not None and engine.network.encoder_engine is not None
        items = [ClassifyItem(t, LABELS if i % 2 else OTHER) for i, t in enumerate(TEXTS * 4)]
        bulk = rt.scheduler.submit(items[:12], priority=Priority.BULK)
        interactive = rt.scheduler.submit(items[12:], priority=Priority.INTERACTIVE)
        got = [f.result(timeout=120).scores for f in bulk + interactive]
        for item, scores in zip(items, got):
            offline = engine.classify([item.text], list(item.labels))[0].scores
            torch_side = builtin_classifier.classify([item.text], list(item.labels))[0].scores
            assert list(scores) == list(item.labels)
            np.testing.assert_allclose(list(scores.values()), list(offline.values()), atol=2e-5)
            np.testing.assert_allclose(list(scores.values()), list(torch_side.values()), atol=2e-5)
        stats = rt.stats()
        assert stats.completed_items == len(items) and 0 < stats.real_tokens <= stats.padded_tokens
    finally:
        rt.stop(grace_s=5)


def test_int8_pool_reports_its_dtype(gliclass_cache) -> None:
    config = AppConfig(model=ModelConfig(id="builtin:minilm", device="auto", engine="onnx", dtype="int8"))
    rt = Runtime.from_config(config)
    rt.start()
    try:
        assert rt.wait_ready(300), rt.error
        assert rt.info.dtype == "int8" and rt.info.device == "cpu"
        (future,) = rt.scheduler.submit([ClassifyItem("I was charged twice, refund me", LABELS)])
        pred = future.result(timeout=60)
        assert pred.labels[:1] == ["billing"]
    finally:
        rt.stop(grace_s=5)


def test_classifier_refuses_onnx_on_another_device(builtin_classifier: Classifier) -> None:
    from gliclass_core.errors import UnsupportedModel

    with pytest.raises(UnsupportedModel, match="CPU"):
        Classifier.from_pretrained("builtin:minilm", device="cuda:0", engine="onnx")
