"""`gliclass-stream classify`: classify texts given as arguments or JSON lines on stdin.

Output is one JSON object per text on stdout:
    {"text": ..., "labels": [predicted, best first], "scores": {label: probability, ...}}
plus "label_chunks" / "truncated" when the labels were split or the text was cut.

With TEXT arguments, any invalid input is an error (exit 2, message on stderr, no output).
On stdin (one JSON object per line: {"text": ..., "labels"?: [...], "threshold"?, "prompt"?}), a bad
line does not stop the stream: its output line is {"error": ..., "line": N} in the same position,
the remaining lines are still classified, and the exit status is 1 if any line failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

from gliclass_core.errors import InvalidInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (none: read JSON lines)")
    parser.add_argument("--model", default="builtin:minilm", help="checkpoint dir, hub id or builtin:minilm")
    parser.add_argument("--labels", help="comma-separated labels (stdin lines may carry their own)")
    parser.add_argument("--threshold", type=float, default=0.5, help="multi-label decision threshold")
    parser.add_argument("--single-label", action="store_true", help="softmax over the labels; predict one")
    parser.add_argument("--top-k", type=int, default=None, help="return at most K predicted labels")
    parser.add_argument("--prompt", default=None, help="task prompt placed after <<SEP>>")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--dtype",
        default=None,
        help="float32, float16, bfloat16 (default: by device); int8 with --engine onnx",
    )
    parser.add_argument(
        "--engine", default="torch", choices=["torch", "onnx"], help="onnx: ONNX Runtime, CPU"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")


def _parse_labels(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",")]


def _result(text: str, pred: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"text": text, "labels": pred.labels, "scores": pred.scores}
    if pred.label_chunks > 1:
        out["label_chunks"] = pred.label_chunks
    if pred.truncated:
        out["truncated"] = True
    return out


def _emit(obj: dict[str, Any], out: IO[str]) -> None:
    out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    from gliclass_core.classifier import build_items
    from gliclass_core.processing.validation import validate_item

    if args.batch_size < 1:
        raise InvalidInput("must be at least 1", field="--batch-size")
    labels = _parse_labels(args.labels)
    if args.texts and labels is None:
        raise InvalidInput("is required with TEXT arguments", field="--labels")
    common = {"multi_label": not args.single_label, "top_k": args.top_k}
    if args.texts:  # fail fast on bad arguments, before loading a model
        for i, item in enumerate(
            build_items(args.texts, labels or [], args.threshold, prompt=args.prompt, **common)
        ):
            validate_item(item, i)

    from gliclass_core import Classifier
    from gliclass_core.runtime.host_memory import retain_freed_memory

    retain_freed_memory()

    clf = Classifier.from_pretrained(args.model, device=args.device, dtype=args.dtype, engine=args.engine)
    if args.texts:
        preds = clf.classify(
            args.texts, labels or [], threshold=args.threshold, prompt=args.prompt,
            batch_size=args.batch_size, **common,
        )  # fmt: skip
        for text, pred in zip(args.texts, preds):
            _emit(_result(text, pred), sys.stdout)
        return 0
    return _stream(clf, sys.stdin, sys.stdout, labels, args, common)


def _batches(stream: IO[str], size: int) -> Iterator[list[tuple[int, str]]]:
    batch: list[tuple[int, str]] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        batch.append((number, line))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stream(
    clf: Any, stdin: IO[str], stdout: IO[str], labels: list[str] | None, args: Any, common: dict
) -> int:
    from gliclass_core.types import ClassifyItem

    failed = False
    for batch in _batches(stdin, args.batch_size):
        slots: list[dict[str, Any] | None] = []
        prepared = []
        texts = []
        for number, line in batch:
            try:
                item = _item_from_line(line, labels, args, common, ClassifyItem)
                prepared.append((len(slots), clf.prepare(item)))
                texts.append(item.text)
                slots.append(None)
            except InvalidInput as exc:
                failed = True
                slots.append({"error": str(exc), "line": number})
        passes = [(k, j) for k, (_, p) in enumerate(prepared) for j in range(len(p.passes))]
        passes.sort(key=lambda kj: prepared[kj[0]][1].passes[kj[1]].num_tokens)
        logits: dict[tuple[int, int], Any] = {}
        for start in range(0, len(passes), args.batch_size):
            chunk = passes[start : start + args.batch_size]
            for key, value in zip(chunk, clf.forward([prepared[k][1].passes[j] for k, j in chunk])):
                logits[key] = value
        for k, (slot, prep) in enumerate(prepared):
            pred = clf.finish(prep, [logits[(k, j)] for j in range(len(prep.passes))])
            slots[slot] = _result(texts[k], pred)
        for obj in slots:
            assert obj is not None
            _emit(obj, stdout)
    return 1 if failed else 0


def _item_from_line(line: str, labels: list[str] | None, args: Any, common: dict, item_type: Any) -> Any:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON ({exc.msg})") from exc
    if not isinstance(obj, dict):
        raise InvalidInput('expected a JSON object like {"text": ...}')
    unknown = set(obj) - {"text", "labels", "threshold", "prompt", "id"}
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(sorted(unknown))}")
    if "text" not in obj:
        raise InvalidInput("is missing", field="text")
    item_labels = obj.get("labels", labels)
    if item_labels is None:
        raise InvalidInput("is missing (no --labels given)", field="labels")
    if not isinstance(item_labels, list):
        raise InvalidInput("must be a list of strings", field="labels")
    return item_type(
        text=obj["text"],
        labels=tuple(item_labels),
        threshold=obj.get("threshold", args.threshold),
        prompt=obj.get("prompt", args.prompt),
        **common,
    )
