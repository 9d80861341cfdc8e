"""Calibrate and evaluate `builtin:minilm` on the labelled set in tests/data/topics.jsonl.

Prints, for the builtin's current LOGIT_SCALE / LOGIT_BIAS:
  - single-label accuracy and macro-F1 (argmax over all labels),
  - multi-label macro-F1 / micro-F1 at threshold 0.5,
  - the logistic-regression fit of "label is true" on the cosine (the scale and bias to use),
    in-sample and with 5-fold cross-validation, so the calibration is not judged on its own data.

Usage:  python benchmarks/core_builtin_calibration.py [--data tests/data/topics.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    labels = rows[0]["all_labels"]
    truth = np.array([[label in r["true_labels"] for label in labels] for r in rows])
    return [r["text"] for r in rows], labels, truth


def macro_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    f1 = []
    for k in range(truth.shape[1]):
        tp = float((pred[:, k] & truth[:, k]).sum())
        fp = float((pred[:, k] & ~truth[:, k]).sum())
        fn = float((~pred[:, k] & truth[:, k]).sum())
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return float(np.mean(f1))


def micro_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float((pred & truth).sum())
    return 2 * tp / (2 * tp + float((pred & ~truth).sum()) + float((~pred & truth).sum()))


def fit_logistic(x: np.ndarray, y: np.ndarray, steps: int = 200) -> tuple[float, float]:
    """Newton's method for p = sigmoid(a*x + b)."""
    a, b = 1.0, 0.0
    feats = np.stack([x, np.ones_like(x)], 1)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(a * x + b)))
        grad = feats.T @ (p - y)
        hess = feats.T @ (feats * (p * (1 - p))[:, None]) + 1e-6 * np.eye(2)
        a, b = np.array([a, b]) - np.linalg.solve(hess, grad)
    return float(a), float(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).parents[1] / "tests" / "data" / "topics.jsonl"))
    args = ap.parse_args()
    from gliclass_core import Classifier
    from gliclass_core.builtin import LOGIT_BIAS, LOGIT_SCALE

    texts, labels, truth = load(Path(args.data))
    clf = Classifier.from_pretrained("builtin:minilm", device="cpu")
    preds = clf.classify(texts, labels)
    probs = np.array([[p.scores[label] for label in labels] for p in preds])
    logits = np.log(probs / (1 - probs))
    cosine = (logits - LOGIT_BIAS) / LOGIT_SCALE

    single = np.zeros_like(truth)
    single[np.arange(len(texts)), probs.argmax(1)] = True
    acc = float((single & truth).any(1).mean())
    print(
        f"builtin:minilm  scale={LOGIT_SCALE:g} bias={LOGIT_BIAS:g}  texts={len(texts)} labels={len(labels)}"
    )
    chance = 1 / len(labels)
    print(f"single-label: accuracy={acc:.3f} macro-F1={macro_f1(single, truth):.3f} (chance {chance:.3f})")
    multi = probs >= 0.5
    print(
        f"multi-label @0.5: macro-F1={macro_f1(multi, truth):.3f} micro-F1={micro_f1(multi, truth):.3f} "
        f"mean predicted labels/text={multi.sum(1).mean():.2f}"
    )
    a, b = fit_logistic(cosine.ravel(), truth.ravel().astype(float))
    print(f"logistic fit on all data: scale={a:.2f} bias={b:.2f}  (boundary cosine {-b / a:.3f})")
    # 5-fold CV: fit on 4/5 of the texts, apply threshold 0.5 on the held-out fifth.
    rng = np.random.default_rng(0)
    folds = np.array_split(rng.permutation(len(texts)), 5)
    held = np.zeros_like(truth)
    for fold in folds:
        train = np.setdiff1d(np.arange(len(texts)), fold)
        fa, fb = fit_logistic(cosine[train].ravel(), truth[train].ravel().astype(float))
        held[fold] = (fa * cosine[fold] + fb) >= 0
    print(f"multi-label @0.5, 5-fold cross-validated calibration: macro-F1={macro_f1(held, truth):.3f}")


if __name__ == "__main__":
    main()
