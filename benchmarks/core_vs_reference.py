"""Reference `gliclass` pipeline vs our Classifier, side by side in one process, same checkpoint.

Checkpoints (`--families`, all built by tests/fixtures/reference.py on the MiniLM backbone):
  uni         uni-encoder, first-token pooling, dot scorer;
  cross-attn  multilingual-style: cross-attn scorer over the text tokens (pooling "pass"),
              class-token pooling "average", extract_text_features;
  calibrated  uni-encoder with the reference's calibrator (use_calibrator, calibrator.* weights).
Workloads (fp32, CPU by default), 10 labels:
  (a) `--texts` texts of ~64 tokens, batch 32;
  (b) a mixed stream of `--mixed` 10-400-token texts (uniform lengths), batch 32.
The stream is cut into windows of `--window` texts; on each window both sides run `--repeats` times,
interleaved with alternating order, and the best time per side and window is summed, so load
spikes on a shared machine hit both alike. Prints texts/s per side and the ratio, and checks that
the predicted labels' scores agree.

`--engines onnx,int8` adds our Classifier on ONNX Runtime (fp32, and int8 dynamically quantised)
as further sides (needs `gliclass-stream[onnx]`; uni and calibrated BERT checkpoints), with the
largest probability difference from the reference and from ours-torch, int8's top-1 agreement
with ours-torch, and the builtin model's macro-F1 on the labelled sets in tests/data at fp32 and int8.

Usage:  python benchmarks/core_vs_reference.py [--threads N] [--repeats 3] [--texts 512] [--mixed 256]
                                             [--families uni,cross-attn,calibrated] [--engines onnx,int8]
Needs the reference package (`pip install gliclass`, a test dependency); checkpoints are built by
tests/fixtures/reference.py.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import print_machine  # benchmarks/machine.py: the machine line

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures import reference  # the tests' reference checkpoint builder

LABELS = [
    "billing",
    "bug report",
    "feature request",
    "account access",
    "delivery",
    "sports",
    "politics",
    "food and cooking",
    "travel",
    "science and technology",
]
WORDS = (
    "the a customer order payment app crash login team match election recipe flight market "
    "price update screen support delivery package weather game player vote minister bread "
    "coffee hotel beach phone laptop server error refund invoice account password network "
    "engine data science space rocket city river mountain music film book school doctor"
).split()


def make_texts(tokenizer, n: int, lengths: list[int], seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        target = lengths[i % len(lengths)]
        words: list[str] = []
        # tokenize(), not __call__: this tokenizer.json pads to 128, which would hide the length.
        while len(tokenizer.tokenize(" ".join(words))) < target:
            words.append(rng.choice(WORDS))
        texts.append(" ".join(words))
    return texts


def build_checkpoint(out: Path, overrides: dict) -> Path:
    """A reference-written checkpoint on the MiniLM backbone (the tests' own fixture builder)."""
    return reference.build(reference.minilm_dir(), out, overrides)


FAMILIES = {
    "uni": dict(pooling_strategy="first", scorer_type="simple", prompt_first=True),
    "cross-attn": dict(
        pooling_strategy="pass",
        scorer_type="cross-attn",
        class_token_pooling="average",
        extract_text_features=True,
        prompt_first=True,
    ),
    "calibrated": dict(
        pooling_strategy="first", scorer_type="simple", prompt_first=True, use_calibrator=True
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--mixed", type=int, default=256, help="texts in workload (b)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--window", type=int, default=128, help="texts per interleaved measurement window")
    ap.add_argument("--checkpoint", help="use this checkpoint instead of building one (one family)")
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES))
    ap.add_argument(
        "--engines", default="", help="extra sides of ours: comma list of onnx (fp32 ONNX Runtime), int8"
    )
    ap.add_argument(
        "--no-malloc-tuning",
        action="store_true",
        help="leave glibc mmap/trim thresholds alone (default: raised for both sides, as serve does)",
    )
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    from gliclass_core.runtime.host_memory import retain_freed_memory

    # Process-wide, so the reference side gets the same allocator behaviour as ours.
    tuned = False if args.no_malloc_tuning else retain_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    print_machine()
    tokenizer = AutoTokenizer.from_pretrained(str(reference.minilm_dir()))
    rng = random.Random(2)
    workloads = {
        f"(a) {args.texts} x ~64 tokens": make_texts(tokenizer, args.texts, [64], seed=1),
        "(b) mixed 10-400 tokens": make_texts(
            tokenizer, args.mixed, [rng.randint(10, 400) for _ in range(args.mixed)], seed=2
        ),
    }
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, batch={args.batch_size}, fp32 CPU,"
        f" freed memory retained: {tuned}"
    )
    for family in args.families.split(","):
        if args.checkpoint:
            ckpt = Path(args.checkpoint)
        else:
            ckpt = build_checkpoint(Path(tempfile.mkdtemp()) / family, FAMILIES[family])
        run_family(family, ckpt, workloads, args)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if engines:
        builtin_quality(engines)


def run_family(family: str, ckpt: Path, workloads: dict[str, list[str]], args: argparse.Namespace) -> None:
    """Reference pipeline vs ours (and each engine) on one checkpoint; prints lines per workload."""
    from gliclass import GLiClassModel, ZeroShotClassificationPipeline
    from transformers import AutoTokenizer

    from gliclass_core import Classifier, Model

    tokenizer = AutoTokenizer.from_pretrained(str(ckpt))
    ref_model = GLiClassModel.from_pretrained(str(ckpt)).eval()
    pipe = ZeroShotClassificationPipeline(
        ref_model, tokenizer, classification_type="multi-label", device="cpu", progress_bar=False
    )
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    ours: dict[str, Model] = {"ours": Classifier.from_pretrained(str(ckpt), device="cpu", dtype="float32")}
    for name in engines:
        dtype = {"onnx": "float32", "int8": "int8"}[name]
        ours[name] = Classifier.from_pretrained(str(ckpt), engine="onnx", dtype=dtype)

    def run(side: str, texts: list[str]) -> np.ndarray:
        """Probabilities (texts, labels) in LABELS order."""
        if side == "ref":
            out = pipe(texts, LABELS, batch_size=args.batch_size, threshold=0.0)
            return np.array([[{x["label"]: x["score"] for x in r}[k] for k in LABELS] for r in out])
        preds = ours[side].classify(texts, LABELS, batch_size=args.batch_size)
        return np.array([[p.scores[k] for k in LABELS] for p in preds])

    sides = ["ref", *ours]
    for name, texts in workloads.items():
        for side in sides:  # warm-up (first-call allocations, lazy inits, ONNX Runtime sessions)
            run(side, texts[:8])
        # Interleave at the granularity of windows of `--window` texts, rotating which side goes
        # first, and keep each window's best time per side: on a shared machine, load spikes then
        # hit every side alike instead of whichever happened to run during them.
        total = dict.fromkeys(sides, 0.0)
        scores: dict[str, list[np.ndarray]] = {side: [] for side in sides}
        for start in range(0, len(texts), args.window):
            window = texts[start : start + args.window]
            best = dict.fromkeys(sides, float("inf"))
            outputs: dict[str, np.ndarray] = {}
            for rep in range(args.repeats):
                shift = (rep + start // args.window) % len(sides)
                for side in sides[shift:] + sides[:shift]:
                    t = time.perf_counter()
                    outputs[side] = run(side, window)
                    best[side] = min(best[side], time.perf_counter() - t)
            for side in sides:
                total[side] += best[side]
                scores[side].append(outputs[side])
        rate = {side: len(texts) / total[side] for side in sides}
        probs = {side: np.concatenate(scores[side]) for side in sides}
        print(f"{family:10s} {name}: " + " | ".join(f"{side} {rate[side]:7.1f} texts/s" for side in sides))
        for side in ours:
            diff = float(np.abs(probs[side] - probs["ref"]).max())
            speedup = total["ref"] / total[side]
            line = f"    {side:>5}: {speedup:.2f}x reference, max |dprob| vs reference {diff:.1e}"
            if side != "ours":
                top1 = float(np.mean(probs[side].argmax(1) == probs["ours"].argmax(1)))
                dours = float(np.abs(probs[side] - probs["ours"]).max())
                line += (
                    f", {total['ours'] / total[side]:.2f}x ours-torch, max |dprob| vs ours-torch {dours:.1e},"
                    f" top-1 agreement with ours-torch {top1:.3f}"
                )
            print(line)


def builtin_quality(engines: list[str]) -> None:
    """Macro-F1 of builtin:minilm on the labelled sets in tests/data, torch fp32 vs each engine."""
    import json

    from gliclass_core import Classifier

    data = Path(__file__).resolve().parents[1] / "tests" / "data"
    models = {"torch fp32": Classifier.from_pretrained("builtin:minilm", device="cpu")}
    for name in engines:
        dtype = {"onnx": "float32", "int8": "int8"}[name]
        models[f"onnx {dtype}"] = Classifier.from_pretrained("builtin:minilm", engine="onnx", dtype=dtype)
    for path in (data / "topics.jsonl", data / "fewshot_test.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        labels = rows[0]["all_labels"]
        truth = np.array([[k in r["true_labels"] for k in labels] for r in rows])
        texts = [r["text"] for r in rows]
        parts = []
        base = None
        for name, clf in models.items():
            probs = np.array([[p.scores[k] for k in labels] for p in clf.classify(texts, labels)])
            single = np.eye(len(labels), dtype=bool)[probs.argmax(1)]
            part = (
                f"{name}: single-label macro-F1 {macro_f1(single, truth):.3f},"
                f" multi-label@0.5 {macro_f1(probs >= 0.5, truth):.3f}"
            )
            if base is None:
                base = probs
            else:
                top1 = float(np.mean(probs.argmax(1) == base.argmax(1)))
                diff = float(np.abs(probs - base).max())
                part += f", top-1 agreement with torch fp32 {top1:.3f}, max |dprob| {diff:.1e}"
            parts.append(part)
        print(
            f"builtin:minilm on {path.name} ({len(rows)} texts, {len(labels)} labels): " + " | ".join(parts)
        )


def macro_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    f1 = []
    for k in range(truth.shape[1]):
        tp = float((pred[:, k] & truth[:, k]).sum())
        fp = float((pred[:, k] & ~truth[:, k]).sum())
        fn = float((~pred[:, k] & truth[:, k]).sum())
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return float(np.mean(f1))


if __name__ == "__main__":
    main()
