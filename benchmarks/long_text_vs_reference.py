"""Long-document mode: the reference's chunking pipeline vs our `long_text="chunk"`, one process.

Same uni-encoder checkpoint (MiniLM backbone, built with the reference package), fp32 CPU, 10
labels in groups of 8 (the reference default), texts of ~700-1400 tokens cut into 1500-character
chunks overlapping by 200. The reference runs each (chunk, label group) of a long text as its own
forward pass; ours batches every pass of every text (`--batch-size` rows per forward). Both sides
run `--repeats` times, interleaved with alternating order; the best time per side is kept. Prints
texts/s per side, the ratio, and the largest score difference.

Usage:  python benchmarks/long_text_vs_reference.py [--texts 16] [--repeats 2] [--threads N]
Needs the reference package (`pip install gliclass`) and ../shared/oracle/make_reference.py.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
from core_vs_reference import FAMILIES, LABELS, WORDS, build_checkpoint
from machine import print_machine  # benchmarks/machine.py: the machine line

if TYPE_CHECKING:
    from gliclass_core.types import ClassifyItem


class Chunking(TypedDict):
    """The chunking options both sides run with."""

    text_chunk_size: int
    text_chunk_overlap: int
    labels_chunk_size: int


CHUNKING: Chunking = {"text_chunk_size": 1500, "text_chunk_overlap": 200, "labels_chunk_size": 8}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    print_machine()

    import torch
    from gliclass import GLiClassModel, ZeroShotClassificationWithChunkingPipeline
    from transformers import AutoTokenizer

    from gliclass_core import Classifier
    from gliclass_core.runtime.host_memory import retain_freed_memory

    tuned = retain_freed_memory()  # process-wide: both sides get it
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    ckpt = build_checkpoint(Path(tempfile.mkdtemp()) / "uni", FAMILIES["uni"])
    tokenizer = AutoTokenizer.from_pretrained(str(ckpt))
    pipe = ZeroShotClassificationWithChunkingPipeline(
        GLiClassModel.from_pretrained(str(ckpt)).eval(), tokenizer, max_length=512, device="cpu",
        progress_bar=False, **CHUNKING,
    )  # fmt: skip
    ours = Classifier.from_pretrained(str(ckpt), device="cpu", dtype="float32")
    rng = random.Random(3)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(600, 1200))) for _ in range(args.texts)]
    tokens = [len(tokenizer.tokenize(t)) for t in texts]
    chunks = sum(len(ours.prepare(_item(t)).text_chunks) for t in texts)
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, fp32 CPU, "
        f"freed memory retained: {tuned}; {len(texts)} texts of {min(tokens)}-{max(tokens)} tokens, "
        f"{chunks} chunks, {len(LABELS)} labels"
    )
    pipe(texts[:1], LABELS, threshold=0.0)  # warm-up
    ours.classify(texts[:1], LABELS, long_text="chunk", **CHUNKING)
    best = {"ref": float("inf"), "ours": float("inf")}
    out: dict[str, list] = {}
    for rep in range(args.repeats):
        for side in ("ref", "ours") if rep % 2 == 0 else ("ours", "ref"):
            start = time.perf_counter()
            if side == "ref":
                out[side] = pipe(texts, LABELS, threshold=0.0, return_hierarchical=True)
            else:
                out[side] = ours.classify(
                    texts, LABELS, long_text="chunk", batch_size=args.batch_size, **CHUNKING
                )
            best[side] = min(best[side], time.perf_counter() - start)
    diff = max(
        abs(ref[label] - pred.scores[label]) for ref, pred in zip(out["ref"], out["ours"]) for label in LABELS
    )
    ref_rate, our_rate = len(texts) / best["ref"], len(texts) / best["ours"]
    print(f"reference chunking pipeline: {ref_rate:8.2f} texts/s")
    print(f"ours (long_text='chunk'):    {our_rate:8.2f} texts/s   ratio {our_rate / ref_rate:.2f}x")
    print(f"largest score difference: {diff:.2e}")
    assert np.isfinite(diff)


def _item(text: str) -> ClassifyItem:
    from gliclass_core.processing.long_text import long_text_options
    from gliclass_core.types import ClassifyItem

    return ClassifyItem(text=text, labels=tuple(LABELS), long_text=long_text_options("chunk", **CHUNKING))


if __name__ == "__main__":
    main()
