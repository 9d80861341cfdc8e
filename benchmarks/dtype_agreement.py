"""How far bf16 (torch) and int8 (ONNX Runtime) move the builtin model's answers from exact float32.

Data: data/builtin_eval/heldout.jsonl (news and other short texts over 8 label sets; never fitted on).
Each side classifies every row with its own label set; printed per side, beside the machine line:
  - top-1 agreement with float32 (the best-scored label is the same);
  - single-label macro-F1 (rows with one true label, prediction = the best label) and multi-label
    macro-F1 at the model's default threshold (prediction = `Prediction.labels`), each the mean over
    label sets, and their difference from float32;
  - the largest |score difference| from float32, and texts/s (side by side, in one process).

On a CPU without native bf16 (no avx512_bf16 / amx_bf16) `dtype="bf16"` runs float32 (see
gliclass_core/devices.py); `--emulate-bf16` then runs torch's emulated bf16 anyway, so the numerics
(not the speed) of bf16 can be measured there: its texts/s are then meaningless and printed as such.

Usage:
  python benchmarks/dtype_agreement.py [--sides bf16,int8] [--limit 300] [--emulate-bf16]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from machine import print_machine  # benchmarks/machine.py: the machine line

DATA = Path(__file__).resolve().parents[1] / "data" / "builtin_eval" / "heldout.jsonl"


def load_rows(limit: int) -> list[dict]:
    """The first `limit` rows of heldout.jsonl (all with 0: the rows are mixed across label sets)."""
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def run_side(clf, rows: list[dict], batch_size: int) -> tuple[list, float]:
    """Predictions in row order and the seconds they took (one classify call per label set)."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[tuple(row["all_labels"])].append(i)
    out: list = [None] * len(rows)
    start = time.perf_counter()
    for labels, members in groups.items():
        preds = clf.classify([rows[i]["text"] for i in members], list(labels), batch_size=batch_size)
        for i, pred in zip(members, preds):
            out[i] = pred
    return out, time.perf_counter() - start


def macro_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    f1 = []
    for k in range(truth.shape[1]):
        tp = float((pred[:, k] & truth[:, k]).sum())
        fp = float((pred[:, k] & ~truth[:, k]).sum())
        fn = float((~pred[:, k] & truth[:, k]).sum())
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return float(np.mean(f1))


def quality(rows: list[dict], preds: list) -> dict[str, float]:
    """Single-label and multi-label (default threshold) macro-F1, means over label sets."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[tuple(row["all_labels"])].append(i)
    single, multi = [], []
    for labels, members in groups.items():
        truth = np.array([[k in rows[i]["true_labels"] for k in labels] for i in members])
        chosen = np.array([[k in preds[i].labels for k in labels] for i in members])
        multi.append(macro_f1(chosen, truth))
        one = [j for j, i in enumerate(members) if len(rows[i]["true_labels"]) == 1]
        if one:
            scores = np.array([[preds[members[j]].scores[k] for k in labels] for j in one])
            best = np.eye(len(labels), dtype=bool)[scores.argmax(1)]
            single.append(macro_f1(best, truth[one]))
    return {"single_f1": float(np.mean(single)), "multi_f1": float(np.mean(multi))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sides", default="bf16,int8", help="comma list beside float32: bf16, int8")
    ap.add_argument("--limit", type=int, default=300, help="rows of heldout.jsonl (0: all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--emulate-bf16", action="store_true", help="run bf16 even where the CPU emulates it")
    args = ap.parse_args()
    import torch

    from gliclass_core import Classifier, devices

    torch.set_grad_enabled(False)
    print_machine()
    native = devices.cpu_half_problem("bfloat16") is None
    if args.emulate_bf16 and not native:
        devices.cpu_flags = lambda: frozenset({"avx512_bf16"})  # type: ignore[assignment]
        print("bf16: emulated by torch on this CPU; its agreement is bf16's, its speed is not")
    rows = load_rows(args.limit)
    models = {"fp32": Classifier.from_pretrained("builtin:minilm", device="cpu", dtype="float32")}
    for side in filter(None, (s.strip() for s in args.sides.split(","))):
        if side == "bf16":
            models[side] = Classifier.from_pretrained("builtin:minilm", device="cpu", dtype="bf16")
        elif side == "int8":
            models[side] = Classifier.from_pretrained("builtin:minilm", engine="onnx", dtype="int8")
        else:
            raise SystemExit(f"unknown side {side!r}")
    for clf in models.values():  # warm-up
        clf.classify([rows[0]["text"]], rows[0]["all_labels"])
    results = {name: run_side(clf, rows, args.batch_size) for name, clf in models.items()}
    base, base_s = results["fp32"]
    base_q = quality(rows, base)
    print(f"builtin:minilm on {DATA.name}, {len(rows)} rows, batch {args.batch_size}")
    for name, (preds, secs) in results.items():
        q = quality(rows, preds)
        dtype = models[name].info.dtype
        line = (
            f"  {name:5s} (runs {dtype}): {len(rows) / secs:6.1f} texts/s ({base_s / secs:.2f}x fp32),"
            f" single-label macro-F1 {q['single_f1']:.4f}, multi-label macro-F1 {q['multi_f1']:.4f}"
        )
        if name != "fp32":
            top1 = np.mean(
                [
                    max(p.scores, key=p.scores.get) == max(b.scores, key=b.scores.get)
                    for p, b in zip(preds, base)
                ]
            )
            diff = max(abs(p.scores[k] - b.scores[k]) for p, b in zip(preds, base) for k in b.scores)
            line += (
                f"; vs fp32: top-1 agreement {top1:.3f},"
                f" d single-F1 {q['single_f1'] - base_q['single_f1']:+.4f},"
                f" d multi-F1 {q['multi_f1'] - base_q['multi_f1']:+.4f}, max |d score| {diff:.3f}"
            )
        print(line, flush=True)


if __name__ == "__main__":
    main()
