"""gRPC load generator: stream throughput vs. the pool's offline ceiling, and unary latency/overhead.

Usage (prints the figures; scale streams/texts to the machine):

    python benchmarks/grpc_bench.py --streams 64 --texts-per-stream 2000
    python benchmarks/grpc_bench.py --streams 64 --texts-per-stream 100 --unary-calls 300   # small CPU box
    python benchmarks/grpc_bench.py --host-bound --texts-per-stream 16 --rounds 2 --unary-calls 100

Phases, all in one run on the same texts and config:
1. `gliclass-stream serve` started as a subprocess with the same model/batching config as a
   Runtime in this process;
2. in alternating rounds on the same texts: the offline ceiling (every text of the round submitted
   straight to this process's scheduler) and stream throughput (N concurrent ClassifyStream calls,
   each sending its share of the round one text per message);
3. unary latency at light load: one caller, one text per call, alternating a direct
   `Scheduler.classify` call in this process with a gRPC `Classify` call, so both see the same noise.
Also the host ceiling: the model tokenizer's parallel `encode_batch` rate of the same texts, with the
offline and stream rates as a share of it (`--host-bound`: tiny model, news texts, 10 labels).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import grpc
from machine import print_machine  # benchmarks/machine.py: the machine line

from gliclass_core.config import parse_config
from gliclass_core.runtime import Priority, Runtime
from gliclass_core.types import ClassifyItem
from server.app.host_bench import NEWS_LABELS, host_ceiling, news_texts, tiny_model_dir
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc

LABELS = ["billing", "bug report", "feature request", "account access", "praise"]
SUBJECTS = ["my card", "the app", "the invoice", "the dashboard", "your support team", "the export", "login"]
VERBS = ["was charged twice for", "crashes when opening", "looks wrong after", "is great for", "fails during"]
OBJECTS = ["the monthly plan", "settings", "the last update", "dark mode", "two-factor codes", "CSV files"]


def make_texts(n: int, seed: int = 0) -> list[str]:
    """Varied ticket-like texts of 6 to ~60 words."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        sentences = [
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
            for _ in range(rng.randint(1, 6))
        ]
        texts.append(" ".join(sentences).capitalize())
    return texts


def config_toml(args: argparse.Namespace, *, http: bool = False) -> str:
    """The config both the served subprocess and this process's Runtime use (`[http]` on with `http`)."""
    return f"""
[model]
id = "{args.model}"
device = "{args.device}"
{"cpu_threads = 1" if args.host_bound else ""}

[batching]
max_batch_size = {args.max_batch_size}
max_wait_ms = {args.max_wait_ms}
max_queue = 20000

[grpc]
address = "127.0.0.1:0"
max_items_per_request = 256
{"[http]" + chr(10) + 'address = "127.0.0.1:0"' if http else ""}
"""


def start_runtime(config_path: Path) -> Runtime:
    """A warm Runtime in this process with the served config (the direct-call baseline)."""
    runtime = Runtime.from_config(parse_config(tomllib.loads(config_path.read_text())))
    runtime.start()
    if not runtime.wait_ready(600):
        raise SystemExit(f"runtime failed: {runtime.error}")
    return runtime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def offline_ceiling(runtime: Runtime, texts: list[str]) -> float:
    """Items/s with the scheduler's queue kept full, no gRPC in the way."""
    items = [ClassifyItem(text, tuple(LABELS)) for text in texts]
    # Chunks, two in flight: the queue stays full without exceeding its bound (max_queue).
    chunk = runtime.config.batching.max_queue // 4
    slots = asyncio.Semaphore(2)

    async def run(part: list[ClassifyItem]) -> None:
        async with slots:
            await runtime.scheduler.classify(part, priority=Priority.INTERACTIVE)

    start = time.perf_counter()
    await asyncio.gather(*(run(items[i : i + chunk]) for i in range(0, len(items), chunk)))
    return len(items) / (time.perf_counter() - start)


async def stream_throughput(address: str, texts: list[str], streams: int) -> tuple[float, int]:
    """Items/s over `streams` concurrent ClassifyStream calls; also the count of failed items."""
    per_stream = len(texts) // streams
    async with grpc.aio.insecure_channel(address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)

        async def one(chunk: list[str], s: int) -> int:
            async def requests():  # type: ignore[no-untyped-def]
                for i, text in enumerate(chunk):
                    yield pb.ClassifyStreamRequest(items=[pb.Item(id=f"{s}-{i}", text=text, labels=LABELS)])

            errors = 0
            async for response in stub.ClassifyStream(requests(), timeout=3600):
                errors += response.result.HasField("error")
            return errors

        start = time.perf_counter()
        chunks = [texts[s * per_stream : (s + 1) * per_stream] for s in range(streams)]
        errors = await asyncio.gather(*(one(chunk, s) for s, chunk in enumerate(chunks)))
        return per_stream * streams / (time.perf_counter() - start), sum(errors)


async def unary_latency(
    address: str, runtime: Runtime, texts: list[str], calls: int
) -> tuple[list[float], list[float], list[float]]:
    """Alternate direct scheduler calls and gRPC Classify calls of one text.

    Returns, in ms: direct latencies, gRPC latencies, and per gRPC call the client latency minus
    the server's own `timings.total_ms` (what transport, (de)serialization and dispatch add).
    """
    direct, over_grpc, paired = [], [], []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        for i in range(calls + 20):
            text = texts[i % len(texts)]
            t0 = time.perf_counter()
            await runtime.scheduler.classify(
                [ClassifyItem(text, tuple(LABELS))], priority=Priority.INTERACTIVE
            )
            t1 = time.perf_counter()
            reply = await stub.Classify(
                pb.ClassifyRequest(items=[pb.Item(text=text, labels=LABELS)]), timeout=30
            )
            t2 = time.perf_counter()
            if i >= 20:  # the first calls warm caches and the connection
                direct.append((t1 - t0) * 1000)
                over_grpc.append((t2 - t1) * 1000)
                paired.append((t2 - t1) * 1000 - reply.results[0].timings.total_ms)
            await asyncio.sleep(0.005)  # light load: one call at a time, with gaps
    return direct, over_grpc, paired


def start_server(config_path: Path, *, http: bool = False) -> tuple[subprocess.Popen[str], str, str]:
    """Start `gliclass-stream serve --config config_path`; return it, its gRPC address and (with
    `http`) its HTTP URL ("" without), once its health is SERVING."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.app.cli", "serve", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    address = http_url = ""
    for line in proc.stdout:
        if "listening on" in line:
            address = line.rsplit(" ", 1)[-1].strip()
        if "HTTP on" in line:
            http_url = line.rsplit(" ", 1)[-1].strip()
        if address and (http_url or not http):
            break
    else:
        raise SystemExit(f"server exited with {proc.wait()}")
    deadline = time.monotonic() + 300
    while subprocess.run(
        [sys.executable, "-m", "server.app.cli", "health", "--address", address], capture_output=True
    ).returncode:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("server did not become SERVING")
        time.sleep(0.5)
    return proc, address, http_url


def print_figures(figures: dict[str, Any]) -> None:
    """One aligned line per figure, then all of them as one JSON line."""
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    print(json.dumps(figures))


async def main(args: argparse.Namespace) -> dict[str, float]:
    n = args.streams * args.texts_per_stream
    texts = news_texts(n, seed=1) if args.host_bound else make_texts(n, seed=1)
    ratios: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "bench.toml"
        config_path.write_text(config_toml(args), encoding="utf-8")
        runtime = start_runtime(config_path)
        await offline_ceiling(runtime, texts[: min(len(texts), 256)])  # warm-up
        proc, address, _ = start_server(config_path)
        try:
            await stream_throughput(address, texts[: args.streams * 4], args.streams)  # warm-up
            # Alternate direct and gRPC rounds on the same texts so drifting machine load hits both.
            direct_s = grpc_s = host_s = 0.0
            errors = 0
            ratios = []
            size = len(texts) // args.rounds // args.streams * args.streams
            for r in range(args.rounds):
                chunk = texts[r * size : (r + 1) * size]
                if r % 2:  # odd rounds go gRPC-first, so order effects cancel out
                    stream_rate, failed = await stream_throughput(address, chunk, args.streams)
                    rate = await offline_ceiling(runtime, chunk)
                else:
                    rate = await offline_ceiling(runtime, chunk)
                    stream_rate, failed = await stream_throughput(address, chunk, args.streams)
                direct_s += len(chunk) / rate
                host_s += len(chunk) / host_ceiling(runtime.classifier, chunk)
                grpc_s += len(chunk) / stream_rate
                errors += failed
                ratios.append(stream_rate / rate)
            ceiling, throughput = size * args.rounds / direct_s, size * args.rounds / grpc_s
            host = size * args.rounds / host_s
            direct, over_grpc, paired = await unary_latency(address, runtime, texts, args.unary_calls)
        finally:
            proc.terminate()
            exit_code = proc.wait(60)
            runtime.stop(grace_s=5)
    figures = {
        "texts": len(texts),
        "streams": args.streams,
        "offline_ceiling_items_per_s": ceiling,
        "stream_items_per_s": throughput,
        "stream_vs_ceiling": throughput / ceiling,
        "host_ceiling_items_per_s": host,
        "offline_vs_host_ceiling": ceiling / host,
        "stream_vs_host_ceiling": throughput / host,
        "stream_failed_items": errors,
        "stream_vs_ceiling_per_round": " ".join(f"{r:.2f}" for r in ratios),
        "unary_p50_ms": statistics.median(over_grpc),
        "unary_p99_ms": percentile(over_grpc, 99),
        "direct_p50_ms": statistics.median(direct),
        "direct_p99_ms": percentile(direct, 99),
        "grpc_overhead_p50_ms": statistics.median(over_grpc) - statistics.median(direct),
        "grpc_overhead_paired_p50_ms": statistics.median(paired),
        "grpc_overhead_paired_p99_ms": percentile(paired, 99),
        "server_exit_code_after_sigterm": exit_code,
    }
    return figures


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and batching options `config_toml` writes (shared with http_bench)."""
    parser.add_argument("--model", default="builtin:minilm")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--texts-per-stream", type=int, default=2000)
    parser.add_argument("--unary-calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4, help="alternating direct/gRPC rounds")
    add_serve_arguments(parser)
    parser.add_argument(
        "--host-bound",
        action="store_true",
        help="tiny model (forward nearly free), news texts of 20-200 words, 10 labels, 1 intra-op thread",
    )
    args = parser.parse_args(argv)
    if args.host_bound:
        global LABELS
        LABELS = list(NEWS_LABELS)
        args.model, args.device = str(tiny_model_dir()), "cpu"
    return args


if __name__ == "__main__":
    print_machine()
    print_figures(asyncio.run(main(parse_args())))
