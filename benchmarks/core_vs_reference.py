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

Usage:  python benchmarks/core_vs_reference.py [--threads N] [--repeats 3] [--texts 512] [--mixed 256]
                                             [--families uni,cross-attn,calibrated]
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


def run_family(family: str, ckpt: Path, workloads: dict[str, list[str]], args: argparse.Namespace) -> None:
    """Reference pipeline vs ours on one checkpoint, every workload; prints one line per workload."""
    from gliclass import GLiClassModel, ZeroShotClassificationPipeline
    from transformers import AutoTokenizer

    from gliclass_core import Classifier

    tokenizer = AutoTokenizer.from_pretrained(str(ckpt))
    ref_model = GLiClassModel.from_pretrained(str(ckpt)).eval()
    pipe = ZeroShotClassificationPipeline(
        ref_model, tokenizer, classification_type="multi-label", device="cpu", progress_bar=False
    )
    ours = Classifier.from_pretrained(str(ckpt), device="cpu", dtype="float32")
    for name, texts in workloads.items():
        # Warm-up both sides on a few texts (first-call allocations, lazy inits).
        pipe(texts[:8], LABELS, batch_size=args.batch_size)
        ours.classify(texts[:8], LABELS, batch_size=args.batch_size)
        # Interleave at the granularity of windows of `--window` texts, alternating which side goes
        # first, and keep each window's best time per side: on a shared machine, load spikes then
        # hit both sides alike instead of whichever happened to run during them.
        ref_time = our_time = 0.0
        agree = []
        for start in range(0, len(texts), args.window):
            window = texts[start : start + args.window]
            best = {"ref": float("inf"), "ours": float("inf")}
            outputs: dict[str, list] = {}
            for rep in range(args.repeats):
                order = ("ref", "ours") if (rep + start // args.window) % 2 == 0 else ("ours", "ref")
                for side in order:
                    t = time.perf_counter()
                    if side == "ref":
                        outputs[side] = pipe(window, LABELS, batch_size=args.batch_size)
                    else:
                        outputs[side] = ours.classify(window, LABELS, batch_size=args.batch_size)
                    best[side] = min(best[side], time.perf_counter() - t)
            ref_time += best["ref"]
            our_time += best["ours"]
            for r, p in zip(outputs["ref"], outputs["ours"]):
                ref_scores = {x["label"]: x["score"] for x in r}
                ours_picked = {k: v for k, v in p.scores.items() if v >= 0.5}
                agree.append(all(abs(ref_scores.get(k, 0.0) - v) < 1e-4 for k, v in ours_picked.items()))
        ref_rate, our_rate = len(texts) / ref_time, len(texts) / our_time
        print(
            f"{family:10s} {name}: reference {ref_rate:7.1f} texts/s | ours {our_rate:7.1f} texts/s"
            f" | ratio {ref_time / our_time:.2f}x | predictions agree {np.mean(agree):.3f}"
        )


if __name__ == "__main__":
    main()
