"""`gliclass-stream eval`: score a model on labelled JSON lines.

Prints accuracy, micro/macro F1, the share of texts whose gold labels are all predicted, the mean
number of predicted labels per text (and per text with no true label) and a per-label table;
`--json` writes the full report (with calibration bins); `--reliability` draws a reliability
diagram PNG (pure Python, no plotting library needed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gliclass_core.errors import InvalidInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="builtin:minilm, a checkpoint directory or a hub id")
    parser.add_argument("--data", required=True, help="JSON lines {text, all_labels, true_labels}")
    parser.add_argument("--threshold", type=float, default=0.5, help="multi-label decision threshold")
    parser.add_argument("--single-label", action="store_true", help="predict the argmax label (softmax)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--json", dest="json_path", help="write the full report as JSON here ('-': stdout)")
    parser.add_argument("--reliability", help="write a reliability-diagram PNG here")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples")


def run(args: argparse.Namespace) -> int:
    from gliclass_core import Classifier
    from gliclass_core.training.datasets import read_jsonl
    from gliclass_core.training.evaluation import evaluate, format_report

    if not 0 <= args.threshold <= 1:
        raise InvalidInput("must be in [0, 1]", field="threshold")
    if args.batch_size < 1:
        raise InvalidInput("must be >= 1", field="batch-size")
    examples = read_jsonl(args.data)[: args.limit]
    clf = Classifier.from_pretrained(args.model, device=args.device)  # GLiClass and GliZNet checkpoints
    multi_label = not args.single_label

    def predict(texts: Sequence[str], labels: Sequence[Sequence[str]]) -> list[dict[str, float]]:
        preds = clf.classify(
            list(texts), [list(x) for x in labels], threshold=args.threshold, multi_label=multi_label
        )
        return [p.scores for p in preds]

    report = evaluate(predict, examples, args.threshold, multi_label, batch_size=args.batch_size)
    print(f"model: {args.model}   data: {args.data}")
    print(format_report(report))
    if args.json_path:
        payload = json.dumps({"model": args.model, "data": args.data, **report.to_dict()}, indent=2)
        if args.json_path == "-":
            print(payload)
        else:
            Path(args.json_path).write_text(payload)
            print(f"JSON report written to {args.json_path}", file=sys.stderr)
    if args.reliability:
        from gliclass_core.training.reliability import reliability_png

        reliability_png(report.calibration, args.reliability)
        print(f"reliability diagram written to {args.reliability}", file=sys.stderr)
    return 0
