"""GPU: throughput of our pool (bf16) vs the reference `gliclass` pipeline on the same checkpoint.

The checkpoint is a GLiClass uni-encoder over a RANDOM ModernBERT-base-sized encoder (22 layers,
hidden 768), built from a config (no hub) and written by the reference package's own
`save_pretrained`, so both sides load the very same files. Speed does not depend on the weights.

Usage (on a CUDA machine; the tokenizer dir holds BERT WordPiece files, e.g. all-MiniLM-L6-v2's):
  python benchmarks/runtime_gpu.py --tokenizer DIR [--texts 4096] [--labels 10] [--out results.json]

Prints (and writes as JSON): items/s of the reference pipeline (batch sizes 8 = its default, and
64), of `Classifier.classify` offline, and of our Runtime pool fed by concurrent submitters; the
pool's batch sizes, padding efficiency and peak GPU memory; and the largest score difference
between the reference and our model on a sample.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import time

from machine import print_machine  # benchmarks/machine.py: the machine line

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPECIAL_TOKENS = ["<<LABEL>>", "<<SEP>>", "<<EXAMPLE>>"]
WORDS = (
    "the a service order account payment refund card bank delivery late broken screen battery phone "
    "app crash login password error charge twice support agent waiting week email reply update "
    "price cheap expensive quality great terrible love hate shipping box damaged missing item"
).split()
LABELS = [
    "billing", "bug report", "feature request", "shipping", "account access",
    "praise", "complaint", "refund", "hardware", "software", "pricing", "other",
]  # fmt: skip


def make_texts(n: int, lo: int, hi: int, seed: int = 0) -> list[str]:
    """Texts of `lo`..`hi` words, uniformly mixed."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def build_checkpoint(tokenizer_dir: str, work: str, size: str) -> str:
    """Write a random encoder and a reference-built GLiClass uni-encoder checkpoint; return its dir."""
    import torch
    from gliclass import GLiClassModel, GLiClassModelConfig
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    enc_dir, out_dir = os.path.join(work, "encoder"), os.path.join(work, "gliclass")
    dims = {
        "base": dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152),
        "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96),
    }[size]
    config = AutoConfig.for_model(
        "modernbert",
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        max_position_embeddings=1024,
        **dims,
    )
    AutoModel.from_config(config).save_pretrained(enc_dir)
    tokenizer.save_pretrained(enc_dir)
    n = len(tokenizer)
    model = GLiClassModel(
        GLiClassModelConfig(
            encoder_config=AutoConfig.from_pretrained(enc_dir),
            encoder_model=enc_dir,
            architecture_type="uni-encoder",
            problem_type="multi_label_classification",
            pooling_strategy="first",
            scorer_type="simple",
            class_token_index=n,
            text_token_index=n + 1,
            example_token_index=n + 2,
        ),
        from_pretrained=True,
    ).to(torch.float32)
    tokenizer.add_tokens(SPECIAL_TOKENS, special_tokens=True)
    model.model.encoder_model.resize_token_embeddings(len(tokenizer))
    model.config.vocab_size = len(tokenizer)
    model.config.encoder_config.vocab_size = len(tokenizer)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # spread the head's logits so a score comparison means something
        for name, param in model.named_parameters():
            if "encoder_model" not in name and param.dim() > 0:
                param.copy_(torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5)
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    shutil.rmtree(enc_dir)
    return out_dir


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_reference(
    ckpt: str, texts: list[str], labels: list[str], batch_size: int, device: str
) -> tuple[float, list]:
    """Items/s of the reference ZeroShotClassificationPipeline (same checkpoint; bf16 on CUDA)."""
    import torch
    from gliclass import GLiClassModel, ZeroShotClassificationPipeline
    from transformers import AutoTokenizer

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = GLiClassModel.from_pretrained(ckpt).to(device, dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    pipe = ZeroShotClassificationPipeline(
        model, tokenizer, classification_type="multi-label", device=device, progress_bar=False
    )
    with torch.no_grad():
        pipe(texts[:batch_size], labels, threshold=0.0, batch_size=batch_size)  # warm-up
        sync()
        started = time.perf_counter()
        out = pipe(texts, labels, threshold=0.0, batch_size=batch_size)
        sync()
    rate = len(texts) / (time.perf_counter() - started)
    del model, pipe
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rate, out


def profile_costs(clf, texts: list[str], labels: list[str], report: dict) -> None:
    """Where time goes: prepare per item (CPU), forward per batch size (wall vs GPU time)."""
    import torch

    from gliclass_core import ClassifyItem

    items = [ClassifyItem(t, tuple(labels)) for t in texts[:1024]]
    started = time.perf_counter()
    prepared = [clf.prepare(item) for item in items]
    report["prepare_us_per_item"] = round(1e6 * (time.perf_counter() - started) / len(items), 1)
    rows = sorted((p.passes[0] for p in prepared), key=lambda p: p.num_tokens)
    middle = rows[len(rows) // 2 - 128 : len(rows) // 2 + 128]  # ~median length, little padding
    report["profile_row_tokens"] = middle[0].num_tokens
    for size in (1, 8, 32, 128, 256):
        batch = middle[:size]
        clf.forward(batch)
        sync()
        start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        started = time.perf_counter()
        start_event.record()
        for _ in range(5):
            clf.forward(batch)
        end_event.record()
        sync()
        wall = (time.perf_counter() - started) / 5 * 1000
        gpu = start_event.elapsed_time(end_event) / 5
        report[f"forward_bs{size}_ms"] = {"wall": round(wall, 2), "gpu": round(gpu, 2)}
        print(f"forward batch {size} x {batch[-1].num_tokens} tokens: {wall:.2f} ms wall", flush=True)
    print(f"prepare: {report['prepare_us_per_item']} us/item", flush=True)


def _drive_bulk(scheduler, items, threads: int, chunk: int) -> None:
    """`threads` plain threads submitting `chunk` items at a time (as the Kafka worker does)."""
    import threading

    from gliclass_core.runtime import Priority

    chunks = iter(range(0, len(items), chunk))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                start = next(chunks, None)
            if start is None:
                return
            for future in scheduler.submit(items[start : start + chunk], priority=Priority.BULK):
                future.result()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


async def _drive(scheduler, items, concurrency: int) -> list:
    """`concurrency` asyncio submitters, each sending one item at a time (as gRPC handlers do)."""
    from gliclass_core.runtime import Priority

    results: list = [None] * len(items)
    next_index = iter(range(len(items)))

    async def submitter() -> None:
        for index in next_index:
            results[index] = (await scheduler.classify([items[index]], priority=Priority.BULK))[0]

    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--work", default="/tmp/gliclass-gpu-bench")
    ap.add_argument("--size", default="base", choices=["base", "tiny"])
    ap.add_argument("--texts", type=int, default=4096)
    ap.add_argument("--labels", type=int, default=10)
    ap.add_argument("--min-words", type=int, default=10)
    ap.add_argument("--max-words", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=1024)
    ap.add_argument("--max-batch-size", type=int, default=256)
    ap.add_argument("--max-batch-tokens", type=int, default=65536)
    ap.add_argument("--ref-batch-sizes", default="8,64")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--bulk-threads", type=int, default=8)
    ap.add_argument("--bulk-chunk", type=int, default=128)
    ap.add_argument("--min-padding-efficiency", default="0.9,0.75", help="comma list: one pool run each")
    ap.add_argument("--out")
    args = ap.parse_args()
    print_machine()

    import numpy as np
    import torch

    from gliclass_core import Classifier, ClassifyItem
    from gliclass_core.config import AppConfig, BatchingConfig, ModelConfig
    from gliclass_core.runtime import Runtime

    torch.set_grad_enabled(False)
    cuda = args.device.startswith("cuda")
    dtype = "bfloat16" if cuda else "float32"
    gpu = torch.cuda.get_device_name(0) if cuda else "none"
    report: dict = {"gpu": gpu, "torch": torch.__version__, "args": vars(args)}
    ckpt = build_checkpoint(args.tokenizer, args.work, args.size)
    texts = make_texts(args.texts, args.min_words, args.max_words)
    labels = LABELS[: args.labels]

    ref_scores = None
    for bs in (int(x) for x in args.ref_batch_sizes.split(",") if x):
        rate, out = bench_reference(ckpt, texts, labels, bs, args.device)
        report[f"reference_bs{bs}_items_per_s"] = round(rate, 1)
        ref_scores = out
        print(f"reference pipeline bf16 batch_size={bs}: {rate:.1f} items/s", flush=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    clf = Classifier.from_pretrained(ckpt, device=args.device, dtype=dtype)
    report["model_info"] = {k: str(v) for k, v in vars(clf.info).items()}
    clf.classify(texts[:64], labels, threshold=0.0, batch_size=64)
    sync()
    started = time.perf_counter()
    offline = clf.classify(texts, labels, threshold=0.0, batch_size=64)
    sync()
    report["offline_classify_bs64_items_per_s"] = round(len(texts) / (time.perf_counter() - started), 1)
    print(f"Classifier.classify {dtype} batch_size=64: {report['offline_classify_bs64_items_per_s']} items/s")
    if ref_scores is not None:
        diffs = [
            abs(offline[i].scores[r["label"]] - r["score"])
            for i in range(0, len(texts), 37)
            for r in ref_scores[i]
        ]
        report["max_abs_score_diff_vs_reference_bf16"] = round(float(np.max(diffs)), 4)
        print(f"max |score ours - reference| (sampled): {report['max_abs_score_diff_vs_reference_bf16']}")
    if cuda:
        profile_costs(clf, texts, labels, report)
    del clf
    if cuda:
        torch.cuda.empty_cache()

    config = AppConfig(
        model=ModelConfig(id=ckpt, device=args.device, dtype=dtype),
        batching=BatchingConfig(
            max_batch_size=args.max_batch_size,
            max_batch_tokens=args.max_batch_tokens,
            max_wait_ms=2,
            max_queue=max(10_000, 2 * args.concurrency),
        ),
    )
    from gliclass_core.runtime import BatchPolicy

    items = [ClassifyItem(text=t, labels=tuple(labels), threshold=0.0) for t in texts]
    pool_rate = 0.0
    for floor in [float(x) for x in args.min_padding_efficiency.split(",")]:
        runtime = Runtime.from_config(
            config, policy=BatchPolicy.from_config(config.batching, min_padding_efficiency=floor)
        )
        runtime.start()
        if not runtime.wait_ready(600):
            raise SystemExit(f"runtime failed to start: {runtime.error!r}")
        asyncio.run(_drive(runtime.scheduler, items[: args.concurrency], args.concurrency))  # warm shapes
        modes = {
            "async": lambda rt=runtime: asyncio.run(_drive(rt.scheduler, items, args.concurrency)),
            "bulk": lambda rt=runtime: _drive_bulk(rt.scheduler, items, args.bulk_threads, args.bulk_chunk),
        }
        for mode, drive in modes.items():
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            before = runtime.stats()
            started = time.perf_counter()
            drive()
            sync()
            elapsed = time.perf_counter() - started
            after = runtime.stats()
            rate = len(items) / elapsed
            pool_rate = max(pool_rate, rate)
            batches = after.batches - before.batches
            key = f"pool_{mode}_floor{floor}"
            report[key] = dict(
                items_per_s=round(rate, 1),
                batches=batches,
                mean_batch_size=round(
                    (after.batch_size.total - before.batch_size.total) / max(batches, 1), 1
                ),
                max_batch_size_so_far=after.max_batch_size_seen,
                padding_efficiency=round(
                    (after.real_tokens - before.real_tokens)
                    / max(after.padded_tokens - before.padded_tokens, 1),
                    3,
                ),
                peak_gpu_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else 0.0,
                compute_busy_fraction=round(
                    (after.compute_time_s.total - before.compute_time_s.total) / elapsed, 3
                ),
            )
            print(f"pool {dtype} [{mode}, min_padding_efficiency={floor}]: {report[key]}", flush=True)
        runtime.stop(5)
    report["pool_items_per_s"] = round(pool_rate, 1)
    for key in sorted(k for k in report if k.startswith("reference_bs")):
        ratio = pool_rate / report[key]
        report[f"speedup_vs_{key.removesuffix('_items_per_s')}"] = round(ratio, 2)
        print(f"speed-up vs {key}: {ratio:.2f}x")
    print(json.dumps(report, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
