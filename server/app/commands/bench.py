"""`gliclass-stream bench`: throughput, latency and padding efficiency of the pool, side by side.

Two scenarios, each printed with the settings that produced it:

* throughput: `--concurrency` asyncio submitters send one text each (as gRPC handlers do) against
  the offline batched baseline (`Classifier.classify`, length-sorted batches) on the same texts,
  measured before and after the pool run so machine noise hits both; plus latency percentiles
  and padding efficiency (real tokens / computed tokens) of the pool.
* latency: interactive p50/p99 with the pool otherwise idle, then again while bulk submitters
  (threads, as the Kafka worker) keep the queue full; the ratio is what matters.

Both print the host ceiling: the Rust tokenizer's parallel `encode_batch` rate of the same texts
with the model's own tokenizer, and every path as a share of it (near 1.0: the host path keeps up
with the tokenizer; far below with a tiny model: Python, not the device, bounds throughput).
`--host-bound` runs the throughput scenario that way: a random 1-layer BERT (hidden 32) with
all-MiniLM-L6-v2's tokenizer, built offline on first use, on 1,024 news-style texts of 20-200 words.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from server.app.commands.model_options import add_engine_arguments

if TYPE_CHECKING:
    from gliclass_core.model import Model

WORDS = (
    "the a service order account payment refund card bank delivery late broken screen battery phone "
    "app crash login password error charge twice support agent waiting week email reply update price "
    "cheap expensive quality great terrible love hate shipping box damaged missing item team match "
    "game won lost election vote policy market stock fell rose travel flight hotel city beach"
).split()
LABELS = (
    "billing", "bug report", "feature request", "shipping", "account access", "praise",
    "complaint", "refund", "sports", "politics", "finance", "travel",
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="builtin:minilm", help="model id or checkpoint dir")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda:0,cuda:1 ...")
    add_engine_arguments(parser)
    parser.add_argument("--replicas-per-device", type=int, default=1)
    parser.add_argument("--cpu-threads", type=int, default=None, help="intra-op threads for all CPU replicas")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--scenario", choices=["throughput", "latency", "all"], default="all")
    parser.add_argument("--texts", type=int, default=1024, help="texts in the throughput run")
    parser.add_argument("--min-words", type=int, default=8, help="shortest text (≈ tokens)")
    parser.add_argument("--max-words", type=int, default=380, help="longest text (≈ tokens)")
    parser.add_argument("--labels", type=int, default=5, help="labels per text")
    parser.add_argument("--concurrency", type=int, default=256, help="single-text submitters (throughput)")
    parser.add_argument("--offline-batch-size", type=int, default=32)
    parser.add_argument("--interactive-clients", type=int, default=4)
    parser.add_argument("--interactive-requests", type=int, default=100, help="per client and phase")
    parser.add_argument("--interactive-max-words", type=int, default=60)
    parser.add_argument("--think-ms", type=float, default=10.0, help="pause between a client's requests")
    parser.add_argument("--bulk-clients", type=int, default=4)
    parser.add_argument("--bulk-batch", type=int, default=32, help="items per bulk submit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", choices=["words", "news"], default="words", help="text generator")
    parser.add_argument(
        "--host-bound",
        action="store_true",
        help="tiny model (forward nearly free), news texts of 20-200 words, 10 labels, offline batch 64, "
        "1 intra-op thread: throughput is the host path's own; compare it with the host ceiling",
    )
    parser.add_argument("--json", action="store_true", help="also print all figures as one JSON object")


def make_texts(n: int, lo: int, hi: int, seed: int, corpus: str = "words") -> list[str]:
    """`n` texts of `lo`..`hi` words (uniform), reproducible from `seed`."""
    if corpus == "news":
        from server.app.host_bench import news_texts

        return news_texts(n, lo, hi, seed)
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def make_labels(count: int, corpus: str = "words") -> tuple[str, ...]:
    if corpus == "news":
        from server.app.host_bench import NEWS_LABELS

        return tuple(NEWS_LABELS[i] if i < len(NEWS_LABELS) else f"topic {i}" for i in range(count))
    return tuple(LABELS[i] if i < len(LABELS) else f"topic {i}" for i in range(count))


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    import numpy as np

    if not samples:
        return {}
    ms = np.asarray(samples) * 1000.0
    return {f"p{q}": round(float(np.percentile(ms, q)), 2) for q in (50, 90, 99)} | {
        "max": round(float(ms.max()), 2)
    }


def run(args: argparse.Namespace) -> int:
    import sys

    from gliclass_core import Classifier
    from gliclass_core.config import AppConfig, BatchingConfig, ModelConfig
    from gliclass_core.runtime.host_memory import retain_freed_memory

    retain_freed_memory()  # as Runtime.start does, so offline runs before the pool starts get it too
    if args.host_bound:
        _host_bound_settings(args)
    model = ModelConfig(
        id=args.model,
        device=args.device,
        dtype=args.dtype,
        engine=args.engine,
        replicas_per_device=args.replicas_per_device,
        cpu_threads=args.cpu_threads,
    )
    batching = BatchingConfig(
        max_batch_size=args.max_batch_size,
        max_batch_tokens=args.max_batch_tokens,
        max_wait_ms=args.max_wait_ms,
        max_queue=max(10_000, 4 * args.concurrency),
    )
    config = AppConfig(model=model, batching=batching)
    from gliclass_core.devices import cpu_summary, resolve_devices

    first_device = resolve_devices(args.device, args.engine)[0]
    classifier = Classifier.from_pretrained(
        args.model, device=first_device, dtype=args.dtype, engine=args.engine
    )
    if args.cpu_threads and first_device == "cpu":
        import torch

        torch.set_num_threads(args.cpu_threads)  # offline runs on this thread with the pool's setting
    labels = make_labels(args.labels, args.corpus)
    figures: dict[str, Any] = {
        "model": args.model,
        "device": args.device,
        "replicas_per_device": args.replicas_per_device,
        "batching": vars(batching),
        "labels": args.labels,
        "dtype": str(classifier.info.dtype),
        "machine": cpu_summary(),
    }
    print(
        f"bench: {args.model} on {args.device} x{args.replicas_per_device}, {args.labels} labels, {batching}"
    )
    print(f"machine: {figures['machine']}; {_versions()}; model dtype {figures['dtype']}", flush=True)
    if args.scenario in ("throughput", "all"):
        figures["throughput"] = _throughput(args, config, classifier, labels)
    if args.scenario in ("latency", "all"):
        figures["latency"] = _latency(args, config, classifier, labels)
    figures["gil_switch_interval_ms"] = round(sys.getswitchinterval() * 1000, 3)
    if args.json:
        print(json.dumps(figures, indent=1))
    return 0


def _host_bound_settings(args: argparse.Namespace) -> None:
    from server.app.host_bench import tiny_model_dir

    args.model = str(tiny_model_dir())
    args.device = "cpu"
    args.corpus = "news"
    args.min_words, args.max_words, args.labels = 20, 200, 10
    args.offline_batch_size = 64
    if args.scenario == "all":
        args.scenario = "throughput"
    if args.cpu_threads is None:
        # The tiny forward gains nothing from a second intra-op thread; that core goes to the tokenizer.
        args.cpu_threads = 1


def _start_runtime(config: Any, classifier: Model) -> Any:
    from gliclass_core.errors import NotReady
    from gliclass_core.runtime import Runtime

    runtime = Runtime.from_config(config, loader=lambda device: classifier)
    runtime.start()
    if not runtime.wait_ready(600):
        raise NotReady(f"the pool did not become ready: {runtime.error!r}")
    return runtime


def _offline(classifier: Model, texts: list[str], labels: tuple[str, ...], batch_size: int) -> float:
    started = time.perf_counter()
    classifier.classify(texts, list(labels), batch_size=batch_size)
    return len(texts) / (time.perf_counter() - started)


def _throughput(args: argparse.Namespace, config: Any, classifier: Model, labels: tuple[str, ...]) -> dict:
    from gliclass_core.runtime import Priority
    from gliclass_core.types import ClassifyItem
    from server.app.host_bench import host_ceiling

    texts = make_texts(args.texts, args.min_words, args.max_words, args.seed, args.corpus)
    items = [ClassifyItem(text, labels) for text in texts]
    classifier.classify(texts[:256], list(labels), batch_size=args.offline_batch_size)  # warm-up
    ceiling_before = host_ceiling(classifier, texts)
    offline_before = _offline(classifier, texts, labels, args.offline_batch_size)

    runtime = _start_runtime(config, classifier)
    latencies: list[float] = []

    async def drive(batch: list[Any]) -> None:
        pending = iter(batch)

        async def submitter() -> None:
            for item in pending:
                started = time.perf_counter()
                await runtime.scheduler.classify([item], priority=Priority.INTERACTIVE)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(submitter() for _ in range(args.concurrency)))

    try:
        asyncio.run(drive(items[: min(len(items), 32)]))  # warm-up
        latencies.clear()
        before = runtime.stats()
        started = time.perf_counter()
        asyncio.run(drive(items))
        pool_rate = len(items) / (time.perf_counter() - started)
        after = runtime.stats()
    finally:
        runtime.stop(grace_s=5)
    offline_after = _offline(classifier, texts, labels, args.offline_batch_size)
    ceiling_after = host_ceiling(classifier, texts)
    offline_rate = (offline_before + offline_after) / 2
    ceiling = (ceiling_before + ceiling_after) / 2
    batches = after.batches - before.batches
    out = {
        "texts": len(texts),
        "words": [args.min_words, args.max_words],
        "concurrency": args.concurrency,
        "offline_items_per_s": round(offline_rate, 1),
        "offline_runs_items_per_s": [round(offline_before, 1), round(offline_after, 1)],
        "pool_items_per_s": round(pool_rate, 1),
        "pool_vs_offline": round(pool_rate / offline_rate, 3),
        "host_ceiling_items_per_s": round(ceiling, 1),
        "host_ceiling_runs_items_per_s": [round(ceiling_before, 1), round(ceiling_after, 1)],
        "offline_vs_host_ceiling": round(offline_rate / ceiling, 3),
        "pool_vs_host_ceiling": round(pool_rate / ceiling, 3),
        "latency_ms": percentiles(latencies),
        "padding_efficiency": round(
            (after.real_tokens - before.real_tokens) / max(1, after.padded_tokens - before.padded_tokens), 3
        ),
        "batches": batches,
        "mean_batch_size": round((after.batch_size.total - before.batch_size.total) / max(1, batches), 1),
        "max_batch_size": after.max_batch_size_seen,
    }
    print(
        f"throughput: {args.concurrency} single-text submitters {pool_rate:.1f} items/s vs offline "
        f"classify(batch_size={args.offline_batch_size}) {offline_rate:.1f} items/s "
        f"(runs {offline_before:.1f}, {offline_after:.1f}) -> ratio {out['pool_vs_offline']:.3f}"
    )
    print(
        f"host ceiling: tokenizer encode_batch of the same {len(texts)} texts {ceiling:.1f} texts/s "
        f"(runs {ceiling_before:.1f}, {ceiling_after:.1f}); share of it: offline "
        f"{out['offline_vs_host_ceiling']:.3f}, {args.concurrency} submitters "
        f"{out['pool_vs_host_ceiling']:.3f}"
    )
    print(
        f"  latency ms {out['latency_ms']}; padding efficiency {out['padding_efficiency']:.3f}; "
        f"{batches} batches, mean size {out['mean_batch_size']}, max {out['max_batch_size']}"
    )
    return out


def _latency(args: argparse.Namespace, config: Any, classifier: Model, labels: tuple[str, ...]) -> dict:
    from gliclass_core.runtime import Priority
    from gliclass_core.types import ClassifyItem

    interactive = [
        ClassifyItem(text, labels)
        for text in make_texts(256, args.min_words, args.interactive_max_words, args.seed + 1, args.corpus)
    ]
    bulk = [
        ClassifyItem(text, labels)
        for text in make_texts(512, args.min_words, args.max_words, args.seed + 2, args.corpus)
    ]
    runtime = _start_runtime(config, classifier)

    async def interactive_phase() -> list[float]:
        samples: list[float] = []

        async def client(offset: int) -> None:
            for k in range(args.interactive_requests):
                item = interactive[(offset * 31 + k) % len(interactive)]
                started = time.perf_counter()
                await runtime.scheduler.classify([item], priority=Priority.INTERACTIVE)
                samples.append(time.perf_counter() - started)
                await asyncio.sleep(args.think_ms / 1000.0)

        await asyncio.gather(*(client(i) for i in range(args.interactive_clients)))
        return samples

    stop = threading.Event()

    def bulk_client(offset: int) -> None:
        k = offset
        while not stop.is_set():
            chunk = [bulk[(k + j) % len(bulk)] for j in range(args.bulk_batch)]
            k += args.bulk_batch
            for future in runtime.scheduler.submit(chunk, priority=Priority.BULK):
                future.result()

    try:
        asyncio.run(interactive_phase())  # warm-up
        alone = asyncio.run(interactive_phase())
        threads = [
            threading.Thread(target=bulk_client, args=(i * 97,), daemon=True)
            for i in range(args.bulk_clients)
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # let the bulk queue fill
        started, completed_before = time.perf_counter(), runtime.stats().completed_items
        loaded = asyncio.run(interactive_phase())
        bulk_completed = runtime.stats().completed_items - completed_before - len(loaded)
        bulk_rate = bulk_completed / (time.perf_counter() - started)
        stop.set()
        for thread in threads:
            thread.join(60)
    finally:
        stop.set()
        runtime.stop(grace_s=5)
    p_alone, p_loaded = percentiles(alone), percentiles(loaded)
    out = {
        "interactive_clients": args.interactive_clients,
        "interactive_words": [args.min_words, args.interactive_max_words],
        "bulk_clients": args.bulk_clients,
        "bulk_batch": args.bulk_batch,
        "interactive_alone_ms": p_alone,
        "interactive_under_bulk_ms": p_loaded,
        "p99_ratio": round(p_loaded["p99"] / p_alone["p99"], 2),
        "bulk_items_per_s_during": round(bulk_rate, 1),
    }
    print(f"latency: interactive alone {p_alone} ms; under bulk load {p_loaded} ms")
    print(f"  p99 under bulk / alone = {out['p99_ratio']:.2f}; bulk ran at {bulk_rate:.1f} items/s meanwhile")
    return out


def _versions() -> str:
    """torch and onnxruntime versions, printed beside the figures."""
    import importlib.metadata

    found = []
    for package in ("torch", "onnxruntime"):
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} absent")
    return ", ".join(found)
