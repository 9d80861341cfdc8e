"""Train -> save -> load -> serve: checkpoints we write load in our Classifier, in the reference
`gliclass` package (same scores), and serve over a real gRPC server."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures.training import minilm_dir, tiny_encoder_dir

from gliclass_core.training.datasets import LabelledExample, parse_example
from gliclass_core.training.trainer import TrainConfig, train

DATA = Path(__file__).resolve().parents[1] / "data"
LABELS = ["sport", "finance", "cooking"]
ROWS = [
    ("The striker scored twice in the derby", "sport"),
    ("Stocks rallied as bond yields dropped", "finance"),
    ("Whisk the eggs and fold in the flour", "cooking"),
    ("The match ended 2-1 after extra time", "sport"),
    ("The central bank raised interest rates", "finance"),
    ("Simmer the sauce for ten minutes", "cooking"),
]
PROBE = ["Our goalkeeper saved a penalty", "Bake the bread at 200 degrees", "Inflation slowed in March"]
needs_reference = pytest.mark.skipif(importlib.util.find_spec("gliclass") is None, reason="needs gliclass")


def examples() -> list[LabelledExample]:
    return [parse_example({"text": t, "all_labels": LABELS, "true_labels": [y]}) for t, y in ROWS]


def reference_scores(directory: Path, texts: list[str], labels: list[str]) -> np.ndarray:
    """Scores from the reference package, one text at a time (its pooling is not padding-safe)."""
    from gliclass import GLiClassModel, ZeroShotClassificationPipeline
    from transformers import AutoTokenizer

    model = GLiClassModel.from_pretrained(str(directory)).eval()
    pipe = ZeroShotClassificationPipeline(
        model, AutoTokenizer.from_pretrained(str(directory)), classification_type="multi-label", device="cpu",
        progress_bar=False,
    )  # fmt: skip
    rows = []
    for text in texts:
        result = {d["label"]: d["score"] for d in pipe(text, labels, threshold=0.0)[0]}
        rows.append([result[lbl] for lbl in labels])
    return np.array(rows)


def classifier_scores(directory: Path, texts: list[str], labels: list[str]) -> np.ndarray:
    from gliclass_core import Classifier

    preds = Classifier.from_pretrained(str(directory), device="cpu").classify(texts, labels, threshold=0.0)
    return np.array([[p.scores[lbl] for lbl in labels] for p in preds])


def trained(model: Any, out: Path, **cfg: Any) -> Any:
    config = TrainConfig(batch_size=6, warmup_ratio=0.0, progress=False, **cfg)
    return train(model, examples(), (), config, output_dir=out, log=lambda _: None)


def test_uni_encoder_from_minilm_learns_and_loads_in_our_classifier_and_the_reference(tmp_path: Path) -> None:
    from gliclass_core.training.gliclass_init import new_gliclass

    torch.manual_seed(0)
    model = new_gliclass(minilm_dir(), "uni-encoder", pooling="first", prompt_first=True)
    batch = examples()[:3]
    model.module.eval()
    with torch.no_grad():
        before = float(model.compute_loss(batch)[0])
    # Fresh uni-encoder heads need far more data to discriminate; 4 steps on one batch must still lower it.
    config = TrainConfig(
        epochs=4, batch_size=3, encoder_lr=5e-5, head_lr=1e-4, warmup_ratio=0.0, progress=False
    )
    train(model, batch, (), config, output_dir=tmp_path, log=lambda _: None)
    model.module.eval()
    with torch.no_grad():
        after = float(model.compute_loss(batch)[0])
    assert after < before, (before, after)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "GLiClass" and config["architecture_type"] == "uni-encoder"
    ours = np.array([[row[lbl] for lbl in LABELS] for row in model.predict(PROBE, [LABELS] * 3)])
    np.testing.assert_allclose(classifier_scores(tmp_path, PROBE, LABELS), ours, atol=2e-4)
    if importlib.util.find_spec("gliclass") is not None:
        np.testing.assert_allclose(reference_scores(tmp_path, PROBE, LABELS), ours, atol=2e-4)


@needs_reference
def test_bi_encoder_checkpoint_matches_the_reference_package(tmp_path: Path) -> None:
    from gliclass_core.training.gliclass_init import new_gliclass

    torch.manual_seed(0)
    model = new_gliclass(tiny_encoder_dir(), "bi-encoder", pooling="avg")
    trained(model, tmp_path, epochs=2, encoder_lr=1e-3, head_lr=3e-3, freeze_embeddings=True)
    ours = np.array([[row[lbl] for lbl in LABELS] for row in model.predict(PROBE, [LABELS] * 3)])
    assert np.ptp(ours) > 1e-3  # the scores differ, so a wrong key or pooling would show
    np.testing.assert_allclose(reference_scores(tmp_path, PROBE, LABELS), ours, atol=2e-4)
    np.testing.assert_allclose(classifier_scores(tmp_path, PROBE, LABELS), ours, atol=2e-4)


def serve_and_classify(clf: Any, model_dir: Path, texts: list[str]) -> list[Any]:
    """Serve `clf` over a real gRPC server on a free port; classify `texts` against LABELS."""
    from fixtures.grpc import TEST_GRPC_CONFIG, ServerThread

    from gliclass_core.config import parse_config
    from gliclass_core.runtime import Runtime
    from server.proto import classifier_pb2 as pb
    from server.proto import classifier_pb2_grpc

    app = parse_config(
        {
            "model": {"id": str(model_dir), "device": "cpu"},
            "batching": {"max_batch_size": 8, "max_wait_ms": 2, "max_queue": 64},
            "label_sets": {"topics": {"labels": LABELS}},
            "grpc": TEST_GRPC_CONFIG,
        }
    )
    runtime = Runtime.from_config(app, loader=lambda device: clf)
    runtime.start()
    assert runtime.wait_ready(timeout=120), runtime.error
    server = ServerThread(runtime)
    try:
        with server.channel() as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            items = [
                pb.Item(id=str(i), text=t, label_set="topics", threshold=0.0) for i, t in enumerate(texts)
            ]
            return list(stub.Classify(pb.ClassifyRequest(items=items), timeout=60).results)
    finally:
        server.close()
        runtime.stop(grace_s=1)


def test_gliznet_cli_train_then_load_and_serve_over_grpc(tmp_path: Path) -> None:
    from gliclass_core import Classifier
    from server.app.cli import main

    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t, "all_labels": LABELS, "true_labels": [y]}) + "\n" for t, y in ROWS)
    )
    out = tmp_path / "gliznet"
    argv = ["train", "--encoder", str(tiny_encoder_dir()), "--arch", "gliznet", "--data", str(data)]
    argv += [
        "--eval-data",
        str(data),
        "--epochs",
        "2",
        "--batch-size",
        "3",
        "--output",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    report = json.loads((out / "train_report.json").read_text())
    assert report["steps"] == 4 and report["best_epoch"] in (1, 2) and report["examples_per_s"] > 0
    clf = Classifier.from_pretrained(str(out), device="cpu")
    assert clf.info.architecture == "gliznet"
    offline = clf.classify(PROBE, LABELS, threshold=0.0)
    results = serve_and_classify(clf, out, PROBE)
    for result, expected in zip(results, offline):
        assert [s.label for s in result.scores] == LABELS
        assert [s.score for s in result.scores] == pytest.approx(
            [expected.scores[lbl] for lbl in LABELS], abs=1e-4
        )


def test_builtin_finetune_cli_then_eval_cli(tmp_path: Path, gliclass_cache: Path) -> None:
    from gliclass_core import Classifier
    from server.app.cli import main

    out = tmp_path / "tuned"
    argv = [
        "train",
        "--model",
        "builtin:minilm",
        "--data",
        str(DATA / "fewshot_train.jsonl"),
        "--eval-split",
        "0",
    ]
    argv += [
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--freeze-embeddings",
        "--output",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    before = Classifier.from_pretrained("builtin:minilm", device="cpu").classify(PROBE, LABELS)
    after = Classifier.from_pretrained(str(out), device="cpu").classify(PROBE, LABELS)
    assert [p.scores for p in after] != [p.scores for p in before]  # the weights changed and were saved
    report, png = tmp_path / "eval.json", tmp_path / "rel.png"
    argv = ["eval", "--model", str(out), "--data", str(DATA / "fewshot_test.jsonl"), "--limit", "12"]
    assert main([*argv, "--json", str(report), "--reliability", str(png)]) == 0
    payload = json.loads(report.read_text())
    assert payload["examples"] == 12 and 0.0 <= payload["macro_f1"] <= 1.0 and payload["per_label"]
    assert png.read_bytes()[:4] == b"\x89PNG"
