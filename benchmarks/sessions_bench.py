"""Streaming sessions against re-scoring the whole thread, on a conversation stream (decoder-kv).

A stream of threads (5-30 messages of 5-60 words each, 10 labels) arrives in rounds: each round
every open thread sends its next message. Each message is scored three ways, in one run:

  incremental: `SessionStore.append(thread, message)` (the thread's decoder cache is extended by
               the message; the label block is scored against it), one message per call
  incr. batch: `SessionStore.append_many` with the round's messages (one batched decoder call)
  runtime:     through a real `Runtime`'s `sessions` service, the way the edges use it: one caller
               thread per thread, each sending its messages one per call and waiting for each answer,
               all threads at once (the scheduler batches appends of different sessions)
  rescore:     the whole thread so far scored at every message (what a stateless service must do),
               one message per call; `resc. batch`: the round's threads in one padded pass
  reference:   the reference `gliclass.streaming.StreamingZeroShotClassificationPipeline`, one call
               per round with every open thread (skipped when `gliclass` is not installed)

Printed: messages/s, decoder tokens computed, and for threads of fixed lengths the rescore /
incremental ratio (it grows with thread length); memory per cached session (bytes and bytes per token).
The model is a tiny random Qwen3 decoder-kv checkpoint written here (hidden 64, 2 layers; scores
are meaningless, the work is real).

Usage:
  python benchmarks/sessions_bench.py                      # short: 12 threads (~1-2 min on 2 shared cores)
  python benchmarks/sessions_bench.py --threads 40 --device cuda
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gliclass_core import Classifier  # noqa: E402
from gliclass_core.runtime.sessions import SessionLimits, SessionStore  # noqa: E402

LABELS = ["billing", "bug report", "feature request", "complaint", "praise", "question",
          "account access", "shipping", "refund", "spam"]  # fmt: skip
WORDS = (
    "the order never arrived and I want my money back please help app crashes when I open settings "
    "love the new update great work could you add dark mode my password reset link does not work "
    "charged twice this month invoice wrong address package delayed again support was slow thanks "
    "team amazing feature request export csv login fails error code refund status buy now cheap"
).split()


def write_checkpoint(out: Path, seed: int = 0) -> Path:
    """A tiny random decoder-kv checkpoint in the reference's format (config.json, model.safetensors)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from gliclass_core.builtin import package_dir
    from gliclass_core.modeling.decoder_kv import DecoderKVNetwork
    from gliclass_core.modeling.decoder_kv_config import parse_decoder_kv_config

    tokenizer = AutoTokenizer.from_pretrained(str(package_dir()))
    tokenizer.add_tokens(["<<LABEL>>", "<<SEP>>", "<<EXAMPLE>>"], special_tokens=True)
    n = len(tokenizer)
    raw: dict[str, Any] = {
        "model_type": "GLiClass", "architecture_type": "decoder-kv", "vocab_size": n, "hidden_size": 64,
        "class_token_index": n - 3, "sep_token_index": n - 2, "example_token_index": n - 1,
        "scorer_encoder_num_layers": 1, "scorer_mlp_hidden_size": 64,
        "encoder_config": {
            "model_type": "qwen3", "vocab_size": n, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "max_position_embeddings": 4096,
        },
    }  # fmt: skip
    torch.manual_seed(seed)
    net = DecoderKVNetwork(parse_decoder_kv_config(raw))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(raw))
    save_file(
        {f"model.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(out / "model.safetensors")
    )
    tokenizer.save_pretrained(str(out))
    return out


def make_threads(count: int, lengths: tuple[int, int], rng: random.Random) -> list[list[str]]:
    """`count` threads of lengths in `lengths` (inclusive), messages of 5-60 words."""
    return [
        [" " + " ".join(rng.choices(WORDS, k=rng.randint(5, 60))) for _ in range(rng.randint(*lengths))]
        for _ in range(count)
    ]


def rounds(threads: list[list[str]]) -> list[dict[str, str]]:
    """Round r: {thread id: its r-th message} for every thread that has one."""
    longest = max(len(t) for t in threads)
    return [{f"t{i}": t[r] for i, t in enumerate(threads) if r < len(t)} for r in range(longest)]


def run_incremental(clf: Any, steps: list[dict[str, str]], batched: bool = False) -> dict[str, Any]:
    store = SessionStore(clf, SessionLimits(max_bytes=1 << 34, max_cached_tokens=4000))
    peak_bytes = peak_sessions = peak_tokens = 0
    start = time.perf_counter()
    for step in steps:
        if batched:  # the round's messages in one call, as the reference pipeline takes them
            store.append_many(list(step), list(step.values()), LABELS)
        for sid, message in step.items() if not batched else ():
            store.append(sid, message, LABELS)
        peak_bytes = max(peak_bytes, store.stats.bytes_cached)
        cached = store.stats.cached_tokens
        peak_sessions, peak_tokens = max(peak_sessions, len(store)), max(peak_tokens, cached)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds, "tokens": store.stats.tokens_computed, "peak_bytes": peak_bytes,
        "peak_sessions": peak_sessions, "peak_cached_tokens": peak_tokens,
    }  # fmt: skip


def run_rescore(clf: Any, steps: list[dict[str, str]], batched: bool = False) -> dict[str, Any]:
    history: dict[str, str] = {}
    tokens = 0
    start = time.perf_counter()
    for step in steps:
        for sid, message in step.items():
            history[sid] = history.get(sid, "") + message
        prepared = [clf.prepare(_item(history[sid])) for sid in step]
        tokens += sum(len(p.passes[0].input_ids) for p in prepared)
        groups = [prepared] if batched else [[p] for p in prepared]  # the round's threads in one pass
        for group in groups:
            logits = clf.forward([p.passes[0] for p in group])
            clf.finish_many(group, [[row] for row in logits])
    return {"seconds": time.perf_counter() - start, "tokens": tokens}


def run_runtime(clf: Any, threads: list[list[str]], torch_threads: int) -> dict[str, Any]:
    """Every thread a concurrent caller of `Runtime.sessions`, one message per call (see module)."""
    from concurrent.futures import ThreadPoolExecutor

    from gliclass_core.config import AppConfig, ModelConfig
    from gliclass_core.runtime import Runtime
    from gliclass_core.runtime.calls import CallContext
    from gliclass_core.runtime.sessions.service import SessionAppend

    config = AppConfig(
        model=ModelConfig(device=str(clf.device), cpu_threads=torch_threads),
        raw={"sessions": {"max_bytes": 1 << 34, "max_cached_tokens": 4000}},
    )
    rt = Runtime.from_config(config, loader=lambda _device: clf)
    rt.start()
    if not rt.wait_ready(120):
        raise RuntimeError(f"the runtime did not start: {rt.error}")

    def converse(index: int, messages: list[str]) -> None:
        for message in messages:
            append = SessionAppend(f"t{index}", _item(message))
            [future] = rt.sessions.submit([append], CallContext())
            future.result()

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(len(threads)) as pool:
            for done in [pool.submit(converse, i, t) for i, t in enumerate(threads)]:
                done.result()
        seconds = time.perf_counter() - start
        stats = rt.sessions.stats()
    finally:
        rt.stop()
    return {
        "seconds": seconds, "tokens": stats.tokens_computed,
        "mean_batch": stats.batch_appends / max(1, stats.batches),
    }  # fmt: skip


def run_reference(path: Path, steps: list[dict[str, str]]) -> dict[str, Any] | None:
    try:
        from gliclass import GLiClassModel
        from gliclass.streaming import StreamingZeroShotClassificationPipeline
    except ImportError:
        return None
    from transformers import AutoTokenizer

    model = GLiClassModel.from_pretrained(str(path)).eval()
    pipe = StreamingZeroShotClassificationPipeline(
        model, AutoTokenizer.from_pretrained(str(path)), device=str(model.device), default_batch_size=64
    )
    start = time.perf_counter()
    for step in steps:
        pipe(list(step.values()), LABELS, session_ids=list(step))
    return {"seconds": time.perf_counter() - start}


def _item(text: str) -> Any:
    from gliclass_core.types import ClassifyItem

    return ClassifyItem(text, tuple(LABELS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=12)
    ap.add_argument("--per-length", type=int, default=3, help="threads per fixed length in the growth table")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    # One intra-op thread: on a small, shared CPU more threads only spin against each other.
    ap.add_argument("--torch-threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_grad_enabled(False)
    torch.set_num_threads(args.torch_threads)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_checkpoint(Path(tmp) / "decoder-kv")
        clf = Classifier.from_pretrained(str(path), device=args.device, max_length=4096)
        clf.classify(["warm up"], LABELS)
        threads = make_threads(args.threads, (5, 30), rng)
        steps = rounds(threads)
        messages = sum(len(s) for s in steps)
        inc, full = run_incremental(clf, steps), run_rescore(clf, steps)
        batch = run_incremental(clf, steps, batched=True)
        full_batch = run_rescore(clf, steps, batched=True)
        served = run_runtime(clf, threads, args.torch_threads)
        ref = run_reference(path, steps) if args.device == "cpu" else None
        print(
            f"stream: {args.threads} threads, {messages} messages, 10 labels, device {args.device}, "
            f"torch threads {args.torch_threads}"
        )
        print(f"{'mode':<12} {'msg/s':>9} {'decoder tokens':>15}")
        print(f"{'incremental':<12} {messages / inc['seconds']:>9.1f} {inc['tokens']:>15}")
        print(f"{'incr. batch':<12} {messages / batch['seconds']:>9.1f} {batch['tokens']:>15}")
        print(
            f"{'runtime':<12} {messages / served['seconds']:>9.1f} {served['tokens']:>15}"
            f"   ({args.threads} concurrent callers; mean session batch {served['mean_batch']:.1f} appends)"
        )
        print(f"{'rescore':<12} {messages / full['seconds']:>9.1f} {full['tokens']:>15}")
        print(f"{'resc. batch':<12} {messages / full_batch['seconds']:>9.1f} {full_batch['tokens']:>15}")
        if ref is not None:
            print(f"{'reference':<12} {messages / ref['seconds']:>9.1f} {'(same as incr.)':>15}")
        print(
            f"speed-up incremental / rescore: {full['seconds'] / inc['seconds']:.2f}x time one message per "
            f"call, {full_batch['seconds'] / batch['seconds']:.2f}x time batched per round, "
            f"{full['tokens'] / inc['tokens']:.2f}x fewer tokens"
        )
        per_session = inc["peak_bytes"] / max(1, inc["peak_sessions"])
        per_token = inc["peak_bytes"] / max(1, inc["peak_cached_tokens"])
        print(
            f"memory per cached session: {per_session / 1024:.1f} KiB mean at peak ({per_token:.0f} B/token)"
        )
        print(f"\nfixed thread lengths ({args.per_length} threads each, one message per call):")
        print(
            f"{'messages':>8} {'incr msg/s':>11} {'rescore msg/s':>14} {'time ratio':>11} {'token ratio':>12}"
        )
        for length in (5, 15, 30):
            steps = rounds(make_threads(args.per_length, (length, length), rng))
            count = sum(len(s) for s in steps)
            inc, full = run_incremental(clf, steps), run_rescore(clf, steps)
            print(
                f"{length:>8} {count / inc['seconds']:>11.1f} {count / full['seconds']:>14.1f} "
                f"{full['seconds'] / inc['seconds']:>10.2f}x {full['tokens'] / inc['tokens']:>11.2f}x"
            )


if __name__ == "__main__":
    main()
