"""`gliclass-stream classify`: classify texts given as arguments or JSON lines on stdin.

Output is one JSON object per text on stdout:
    {"text": ..., "labels": [predicted, best first], "scores": {label: probability, ...}}
plus "label_chunks" / "truncated" when the labels were split or the text was cut, "text_chunks"
with `--long-text chunk`, and "hierarchy" with `--hierarchical`. `--labels` may be a JSON object of
label groups (`{"sentiment": ["positive", "negative"]}`), scored as "sentiment.positive", ...

With TEXT arguments, any invalid input is an error (exit 2, message on stderr, no output).
On stdin (one JSON object per line: {"text": ..., "labels"?: [...], "threshold"?, "prompt"?}), a bad
line does not stop the stream: its output line is {"error": ..., "reason": ..., "field"?: ...,
"line": N} in the same position, the remaining lines are still classified, and the exit status is 1
if any line failed. Lines are bounded (MAX_LINE_CHARS, JSON nesting depth); bytes that are not
UTF-8 make that line an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from gliclass_core.errors import InvalidInput
from server.app.commands.model_options import add_engine_arguments

if TYPE_CHECKING:
    from gliclass_core.model import Model

MAX_LINE_CHARS = 4 * 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (none: read JSON lines)")
    parser.add_argument("--model", default="builtin:minilm", help="checkpoint dir, hub id or builtin:minilm")
    parser.add_argument("--labels", help="comma-separated labels (stdin lines may carry their own)")
    parser.add_argument("--threshold", type=float, default=0.5, help="multi-label decision threshold")
    parser.add_argument("--single-label", action="store_true", help="softmax over the labels; predict one")
    parser.add_argument("--top-k", type=int, default=None, help="return at most K predicted labels")
    parser.add_argument("--prompt", default=None, help="task prompt placed after <<SEP>>")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    add_engine_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    parser.add_argument("--long-text", choices=("truncate", "chunk"), default="truncate",
                        help="texts longer than the model: cut, or score overlapping chunks")  # fmt: skip
    parser.add_argument("--text-chunk-size", type=int, default=None, help="chunk mode: characters per chunk")
    parser.add_argument(
        "--text-chunk-overlap", type=int, default=None, help="chunk mode: overlap in characters"
    )
    parser.add_argument("--labels-chunk-size", type=int, default=None, help="chunk mode: labels per pass")
    parser.add_argument("--hierarchical", action="store_true",
                        help='add "hierarchy": the scores nested like hierarchical labels')  # fmt: skip
    parser.add_argument("--label-separator", default=".", help="joins hierarchical label names (default .)")


#: --labels: comma-separated labels, or a JSON object of label groups (hierarchical).
Labels = list[str] | dict[str, Any]


def _parse_labels(value: str | None) -> Labels | None:
    """Comma-separated labels, or a JSON object of hierarchical labels (`{"sports": ["football"]}`)."""
    if value is None:
        return None
    if value.lstrip().startswith("{"):
        try:
            tree = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"starts with '{{' but is not valid JSON ({exc.msg})", field="--labels"
            ) from exc
        if not isinstance(tree, dict):
            raise InvalidInput("must be a JSON object of label groups", field="--labels")
        return tree
    return [part.strip() for part in value.split(",")]


def _options(args: argparse.Namespace, labels: Any, index: int | None = None) -> dict[str, Any]:
    """ClassifyItem fields for the long-text and hierarchical options (labels: flat list or mapping)."""
    from gliclass_core.processing.hierarchy import split_labels
    from gliclass_core.processing.long_text import long_text_options

    flat, tree = split_labels(labels, args.label_separator, index=index)
    long_text = long_text_options(
        args.long_text, args.text_chunk_size, args.text_chunk_overlap, args.labels_chunk_size, index=index
    )
    return {"labels": tuple(flat), "label_tree": tree, "long_text": long_text,
            "return_hierarchical": args.hierarchical}  # fmt: skip


def _result(text: str, pred: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"text": text, "labels": pred.labels, "scores": pred.scores}
    if pred.label_chunks > 1:
        out["label_chunks"] = pred.label_chunks
    if pred.truncated:
        out["truncated"] = True
    if pred.text_chunks > 1:
        out["text_chunks"] = pred.text_chunks
    if pred.hierarchy is not None:
        out["hierarchy"] = pred.hierarchy
    return out


def _emit(obj: dict[str, Any], out: IO[str]) -> None:
    out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    from gliclass_core.items import build_items
    from gliclass_core.processing.validation import validate_item

    if args.batch_size < 1:
        raise InvalidInput("must be at least 1", field="--batch-size")
    labels = _parse_labels(args.labels)
    if args.texts and labels is None:
        raise InvalidInput("is required with TEXT arguments", field="--labels")
    common = {"multi_label": not args.single_label, "top_k": args.top_k}
    if args.texts:  # fail fast on bad arguments, before loading a model
        options = _options(args, labels)
        for i, item in enumerate(
            build_items(args.texts, list(options["labels"]), args.threshold, prompt=args.prompt, **common)
        ):
            validate_item(dataclasses.replace(item, **options), i)

    from gliclass_core import Classifier
    from gliclass_core.runtime.host_memory import retain_freed_memory

    retain_freed_memory()

    clf = Classifier.from_pretrained(args.model, device=args.device, dtype=args.dtype, engine=args.engine)
    if args.texts:
        preds = clf.classify(
            args.texts, labels or [], threshold=args.threshold, prompt=args.prompt,
            batch_size=args.batch_size, long_text=options["long_text"],
            return_hierarchical=args.hierarchical, label_separator=args.label_separator, **common,
        )  # fmt: skip
        for text, pred in zip(args.texts, preds):
            _emit(_result(text, pred), sys.stdout)
        return 0
    # Undecodable bytes become lone surrogates, which validation rejects for their line only.
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
    return _stream(clf, stdin, sys.stdout, labels, args, common)


def _lines(stream: IO[str]) -> Iterator[tuple[int, str | None]]:
    """(line number, line) pairs; None for a line over MAX_LINE_CHARS (its rest is skipped unread)."""
    number = 0
    while True:
        line = stream.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):  # MAX_LINE_CHARS and its newline fit
            while line and not line.endswith("\n"):
                line = stream.readline(MAX_LINE_CHARS)
            yield number, None
        else:
            yield number, line


def _batches(stream: IO[str], size: int) -> Iterator[list[tuple[int, str | None]]]:
    batch: list[tuple[int, str | None]] = []
    for number, line in _lines(stream):
        if line is not None and not line.strip():
            continue
        batch.append((number, line))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _error_line(exc: Exception, number: int) -> dict[str, Any]:
    if isinstance(exc, InvalidInput):
        out: dict[str, Any] = {"error": str(exc), "reason": exc.reason}
        if exc.field is not None:
            out["field"] = exc.field
    else:  # a failure nobody foresaw: still one line's error, never the end of the stream
        out = {"error": f"internal error ({type(exc).__name__}): {exc}", "reason": "internal_error"}
    out["error"] = out["error"].encode("utf-8", "backslashreplace").decode("utf-8")
    out["line"] = number
    return out


def _stream(
    clf: Model, stdin: IO[str], stdout: IO[str], labels: Labels | None, args: Any, common: dict
) -> int:
    from gliclass_core.types import ClassifyItem

    failed = False
    for batch in _batches(stdin, args.batch_size):
        slots: list[dict[str, Any] | None] = []
        prepared = []
        texts = []
        for number, line in batch:
            try:
                if line is None:
                    raise InvalidInput(f"line is longer than {MAX_LINE_CHARS} characters")
                item = _item_from_line(line, labels, args, common, ClassifyItem)
                prepared.append((len(slots), clf.prepare(item)))
                texts.append(item.text)
                slots.append(None)
            except Exception as exc:
                failed = True
                slots.append(_error_line(exc, number))
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


def _item_from_line(line: str, labels: Labels | None, args: Any, common: dict, item_type: Any) -> Any:
    from gliclass_core.processing.bounded_json import JsonRejected, loads

    try:
        obj = loads(line)
    except JsonRejected as exc:
        message = exc.message if exc.reason == "invalid_json" else f"not accepted as JSON: {exc.message}"
        raise InvalidInput(message) from exc
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
    if not isinstance(item_labels, list | dict):
        raise InvalidInput("must be a list of strings or an object of label groups", field="labels")
    return item_type(
        text=obj["text"],
        threshold=obj.get("threshold", args.threshold),
        prompt=obj.get("prompt", args.prompt),
        **_options(args, item_labels),
        **common,
    )
