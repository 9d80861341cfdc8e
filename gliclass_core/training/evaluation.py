"""Evaluation metrics: accuracy, micro/macro F1, per-label precision/recall/F1 and calibration bins.

Also what a user checking their own label set needs at a glance: the share of texts whose gold
labels are all predicted, and how many labels are predicted per text (overall, and for texts with
no true label, where the answer should be "none").

Works on plain scores (`{label: probability}` per example), so any model — GLiClass through
`Classifier`, or a GliZNet under training — is evaluated the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gliclass_core.processing.postprocess import decide_row
from gliclass_core.training.datasets import LabelledExample

# predict(texts, labels per text) -> {label: probability} per text
PredictFn = Callable[[Sequence[str], Sequence[Sequence[str]]], list[dict[str, float]]]


@dataclass(frozen=True)
class LabelMetrics:
    """Precision/recall/F1 of one label, with its counts."""

    precision: float
    recall: float
    f1: float
    support: int
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class CalibrationBin:
    """One reliability-diagram bin: scores in [lower, upper)."""

    lower: float
    upper: float
    count: int
    mean_score: float
    positive_rate: float


@dataclass
class EvalReport:
    """Everything `gliclass-stream eval` reports (JSON-serialisable via `to_dict`)."""

    examples: int
    multi_label: bool
    threshold: float
    accuracy: float
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    expected_calibration_error: float
    # Among texts with at least one true label: the share with every true label predicted.
    gold_predicted_share: float | None = None
    # Predicted labels per text: over all texts, and over texts with no true label (None if none).
    mean_predicted_labels: float = 0.0
    mean_predicted_labels_no_gold: float | None = None
    per_label: dict[str, LabelMetrics] = field(default_factory=dict)
    calibration: list[CalibrationBin] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def decide(scores: Mapping[str, float], threshold: float, multi_label: bool) -> set[str]:
    """Predicted labels: score >= threshold (multi-label) or the argmax (single-label), as served."""
    if not scores:
        return set()
    return set(decide_row(list(scores), list(scores.values()), multi_label, threshold, None))


def compute_metrics(
    examples: Sequence[LabelledExample],
    scores: Sequence[Mapping[str, float]],
    threshold: float = 0.5,
    multi_label: bool = True,
    bins: int = 10,
) -> EvalReport:
    """Score predictions against gold labels (a target >= 0.5 counts as a true label)."""
    if len(examples) != len(scores):
        raise ValueError(f"{len(examples)} examples but {len(scores)} score rows")
    counts: dict[str, list[int]] = {}  # label -> [tp, fp, fn]
    exact = 0
    with_gold = gold_hit = predicted = no_gold = no_gold_predicted = 0
    bin_n = [0] * bins
    bin_score = [0.0] * bins
    bin_pos = [0.0] * bins
    for ex, row in zip(examples, scores):
        gold = set(ex.true_labels)
        pred = decide(row, threshold, multi_label)
        exact += int(pred == gold)
        predicted += len(pred)
        if gold:
            with_gold += 1
            gold_hit += int(gold <= pred)
        else:
            no_gold += 1
            no_gold_predicted += len(pred)
        for lbl in ex.labels:
            c = counts.setdefault(lbl, [0, 0, 0])
            c[0] += int(lbl in pred and lbl in gold)
            c[1] += int(lbl in pred and lbl not in gold)
            c[2] += int(lbl not in pred and lbl in gold)
            s = float(row.get(lbl, 0.0))
            b = min(int(s * bins), bins - 1)
            bin_n[b] += 1
            bin_score[b] += s
            bin_pos[b] += float(lbl in gold)
    per_label: dict[str, LabelMetrics] = {}
    for lbl in sorted(counts):
        tp, fp, fn = counts[lbl]
        p, r, f = _prf(tp, fp, fn)
        per_label[lbl] = LabelMetrics(p, r, f, tp + fn, tp, fp, fn)
    tp = sum(c[0] for c in counts.values())
    fp = sum(c[1] for c in counts.values())
    fn = sum(c[2] for c in counts.values())
    micro = _prf(tp, fp, fn)
    # Macro over labels that occur in the gold data or the predictions (sklearn's convention).
    active = [m for m in per_label.values() if m.support or m.fp]
    macro = tuple(
        sum(getattr(m, k) for m in active) / len(active) if active else 0.0
        for k in ("precision", "recall", "f1")
    )
    total = sum(bin_n)
    calibration = [
        CalibrationBin(
            i / bins,
            (i + 1) / bins,
            bin_n[i],
            bin_score[i] / bin_n[i] if bin_n[i] else 0.0,
            bin_pos[i] / bin_n[i] if bin_n[i] else 0.0,
        )
        for i in range(bins)
    ]
    ece = sum(b.count * abs(b.mean_score - b.positive_rate) for b in calibration) / total if total else 0.0
    return EvalReport(
        examples=len(examples),
        multi_label=multi_label,
        threshold=threshold,
        accuracy=exact / len(examples) if examples else 0.0,
        micro_precision=micro[0],
        micro_recall=micro[1],
        micro_f1=micro[2],
        macro_precision=macro[0],
        macro_recall=macro[1],
        macro_f1=macro[2],
        expected_calibration_error=ece,
        gold_predicted_share=gold_hit / with_gold if with_gold else None,
        mean_predicted_labels=predicted / len(examples) if examples else 0.0,
        mean_predicted_labels_no_gold=no_gold_predicted / no_gold if no_gold else None,
        per_label=per_label,
        calibration=calibration,
    )


def evaluate(
    predict: PredictFn,
    examples: Sequence[LabelledExample],
    threshold: float = 0.5,
    multi_label: bool = True,
    batch_size: int = 32,
) -> EvalReport:
    """Run `predict` over the examples in batches and compute the metrics."""
    scores: list[dict[str, float]] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        scores.extend(predict([e.text for e in chunk], [list(e.labels) for e in chunk]))
    return compute_metrics(examples, scores, threshold, multi_label)


def format_report(report: EvalReport) -> str:
    """Render a report as a fixed-width table for a terminal."""
    mode = "multi-label" if report.multi_label else "single-label"
    lines = [
        f"examples: {report.examples}   mode: {mode}   threshold: {report.threshold:g}",
        f"accuracy (exact match): {report.accuracy:.4f}",
        f"micro  P {report.micro_precision:.4f}  R {report.micro_recall:.4f}  F1 {report.micro_f1:.4f}",
        f"macro  P {report.macro_precision:.4f}  R {report.macro_recall:.4f}  F1 {report.macro_f1:.4f}",
        f"predicted labels per text: {report.mean_predicted_labels:.2f}",
    ]
    gold, no_gold = report.gold_predicted_share, report.mean_predicted_labels_no_gold
    if gold is not None:
        lines.append(f"gold labels all predicted: {gold:.4f} of texts with a true label")
    if no_gold is not None:
        lines.append(f"predicted labels per text with no true label: {no_gold:.2f}")
    lines += [
        f"expected calibration error: {report.expected_calibration_error:.4f}",
        "",
    ]
    width = max([len("label"), *(len(lbl) for lbl in report.per_label)])
    lines.append(f"{'label':<{width}}  precision  recall     f1  support")
    lines.append("-" * (width + 35))
    for lbl, m in report.per_label.items():
        lines.append(f"{lbl:<{width}}  {m.precision:9.4f}  {m.recall:6.4f}  {m.f1:.4f}  {m.support:7d}")
    return "\n".join(lines)
