"""HTTP edge figures: unary overhead over a direct scheduler call, `/metrics` scrape time under load,
and throughput with the web console open vs closed.

Usage (prints the figures; scale to the machine):

    python benchmarks/http_bench.py --calls 300 --callers 4 --rounds 6 --round-s 8

One run, one `gliclass-stream serve` subprocess with `[http]` on, one Runtime in this process:
1. unary latency at light load: one caller, one text per call, alternating a direct
   `Scheduler.classify` here, an HTTP `POST /v1/classify` and a gRPC `Classify` to the server, so
   all three see the same noise; "paired" = client latency minus the server's own `totalMs`;
2. load (N closed-loop gRPC callers, 8 texts a call) in alternating rounds: "console open"
   rounds poll `/v1/stats` once a second as the page does (and scrape `/metrics` once a second,
   timed), "closed" rounds do not; per pair the ratio of throughput and of the server process's
   CPU time per item (from /proc, less sensitive than throughput to other jobs on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from machine import print_machine  # benchmarks/machine.py: the machine line

sys.path.insert(0, str(Path(__file__).parent))
from grpc_bench import (
    LABELS,
    add_serve_arguments,
    config_toml,
    make_texts,
    percentile,
    print_figures,
    start_runtime,
    start_server,
)

from gliclass_core.runtime import Priority, Runtime
from gliclass_core.types import ClassifyItem
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def unary(
    runtime: Runtime, session: aiohttp.ClientSession, url: str, stub: classifier_pb2_grpc.ClassifierStub,
    texts: list[str], calls: int,
) -> dict[str, list[float]]:  # fmt: skip
    out: dict[str, list[float]] = {k: [] for k in ("direct", "http", "grpc", "http_paired", "grpc_paired")}
    for i in range(calls + 20):
        text = texts[i % len(texts)]
        t0 = time.perf_counter()
        await runtime.scheduler.classify([ClassifyItem(text, tuple(LABELS))], priority=Priority.INTERACTIVE)
        t1 = time.perf_counter()
        body = {"items": [{"text": text, "labels": LABELS}]}
        async with session.post(url + "v1/classify", json=body) as response:
            reply = await response.json()
        t2 = time.perf_counter()
        grpc_reply = await stub.Classify(
            pb.ClassifyRequest(items=[pb.Item(text=text, labels=LABELS)]), timeout=30
        )
        t3 = time.perf_counter()
        if i >= 20:  # the first calls warm caches and connections
            out["direct"].append((t1 - t0) * 1000)
            out["http"].append((t2 - t1) * 1000)
            out["grpc"].append((t3 - t2) * 1000)
            out["http_paired"].append((t2 - t1) * 1000 - reply["results"][0]["timings"]["totalMs"])
            out["grpc_paired"].append((t3 - t2) * 1000 - grpc_reply.results[0].timings.total_ms)
        await asyncio.sleep(0.005)
    return out


async def load_round(
    stub: classifier_pb2_grpc.ClassifierStub, texts: list[str], callers: int, seconds: float,
    watch: Any = None,
) -> float:  # fmt: skip
    """Items/s from `callers` closed-loop gRPC callers (8 texts a call) for `seconds`, `watch` beside."""
    done = 0
    end = time.perf_counter() + seconds

    async def one(c: int) -> None:
        nonlocal done
        i = c * 8
        while time.perf_counter() < end:
            chunk = [texts[(i + k) % len(texts)] for k in range(8)]
            await stub.Classify(
                pb.ClassifyRequest(items=[pb.Item(text=t, labels=LABELS) for t in chunk]), timeout=120
            )
            done += len(chunk)
            i += callers * 8

    start = time.perf_counter()
    watcher = asyncio.create_task(watch()) if watch else None
    await asyncio.gather(*(one(c) for c in range(callers)))
    elapsed = time.perf_counter() - start
    if watcher:
        watcher.cancel()
    return done / elapsed


async def main(args: argparse.Namespace) -> dict[str, Any]:
    texts = make_texts(2000, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "bench.toml"
        config_path.write_text(config_toml(args, http=True), encoding="utf-8")
        runtime = start_runtime(config_path)
        proc, grpc_address, url = start_server(config_path, http=True)
        scrapes: list[float] = []
        scrape_bytes = 0
        polls: list[float] = []
        try:
            async with aiohttp.ClientSession() as session, grpc.aio.insecure_channel(grpc_address) as channel:
                stub = classifier_pb2_grpc.ClassifierStub(channel)
                lat = await unary(runtime, session, url, stub, texts, args.calls)

                async def console_open() -> None:
                    nonlocal scrape_bytes
                    while True:
                        t0 = time.perf_counter()
                        async with session.get(url + "v1/stats") as response:
                            await response.read()
                        t1 = time.perf_counter()
                        async with session.get(url + "metrics") as response:
                            scrape_bytes = len(await response.read())
                        polls.append((t1 - t0) * 1000)
                        scrapes.append((time.perf_counter() - t1) * 1000)
                        await asyncio.sleep(1.0)

                await load_round(stub, texts, args.callers, 2.0)  # warm-up
                ratios, cpu_ratios = [], []

                async def measured(watch: Any) -> tuple[float, float]:
                    """Items/s and server CPU seconds per item over one round."""
                    cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                    rate = await load_round(stub, texts, args.callers, args.round_s, watch)
                    items = rate * (time.perf_counter() - t0)
                    return rate, (cpu_seconds(proc.pid) - cpu0) / max(items, 1.0)

                for r in range(args.rounds):
                    if r % 2:  # alternate the order so drifting machine load hits both
                        closed, closed_cpu = await measured(None)
                        opened, opened_cpu = await measured(console_open)
                    else:
                        opened, opened_cpu = await measured(console_open)
                        closed, closed_cpu = await measured(None)
                    ratios.append(opened / closed)
                    cpu_ratios.append(opened_cpu / closed_cpu)

                # What the console costs the server, in CPU (not wall) time, so other jobs do not count.
                await asyncio.sleep(1.0)
                cpu0 = cpu_seconds(proc.pid)
                for _ in range(args.polls):
                    async with session.get(url + "v1/stats") as response:
                        await response.read()
                stats_cpu_ms = (cpu_seconds(proc.pid) - cpu0) * 1000 / args.polls
                cpu0 = cpu_seconds(proc.pid)
                for _ in range(args.polls):
                    async with session.get(url + "metrics") as response:
                        await response.read()
                scrape_cpu_ms = (cpu_seconds(proc.pid) - cpu0) * 1000 / args.polls
                cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                await asyncio.sleep(2.0)
                idle_cpu_ms = (cpu_seconds(proc.pid) - cpu0) * 1000 / (time.perf_counter() - t0)
        finally:
            proc.terminate()
            proc.wait(60)
            runtime.stop(grace_s=5)
    return {
        "direct_p50_ms": statistics.median(lat["direct"]),
        "direct_p99_ms": percentile(lat["direct"], 99),
        "http_p50_ms": statistics.median(lat["http"]),
        "http_p99_ms": percentile(lat["http"], 99),
        "grpc_p50_ms": statistics.median(lat["grpc"]),
        "grpc_p99_ms": percentile(lat["grpc"], 99),
        "http_overhead_p50_ms": statistics.median(lat["http"]) - statistics.median(lat["direct"]),
        "http_overhead_paired_p50_ms": statistics.median(lat["http_paired"]),
        "http_overhead_paired_p99_ms": percentile(lat["http_paired"], 99),
        "grpc_overhead_paired_p50_ms": statistics.median(lat["grpc_paired"]),
        "grpc_overhead_paired_p99_ms": percentile(lat["grpc_paired"], 99),
        "metrics_scrape_under_load_p50_ms": statistics.median(scrapes),
        "metrics_scrape_under_load_p99_ms": percentile(scrapes, 99),
        "metrics_scrape_bytes": scrape_bytes,
        "stats_poll_under_load_p50_ms": statistics.median(polls),
        "console_open_vs_closed_per_pair": " ".join(f"{r:.3f}" for r in ratios),
        "console_open_vs_closed_median": statistics.median(ratios),
        "server_cpu_per_item_open_vs_closed_per_pair": " ".join(f"{r:.3f}" for r in cpu_ratios),
        "server_cpu_per_item_open_vs_closed_median": statistics.median(cpu_ratios),
        "stats_polls": len(polls),
        "server_cpu_per_stats_poll_ms": stats_cpu_ms,
        "server_cpu_per_metrics_scrape_ms": scrape_cpu_ms,
        "server_idle_cpu_ms_per_s": idle_cpu_ms,
        "console_cpu_share_of_one_core": stats_cpu_ms / 1000.0,  # the page polls once a second
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="unary calls per transport")
    parser.add_argument("--callers", type=int, default=4, help="concurrent gRPC callers under load")
    parser.add_argument("--rounds", type=int, default=6, help="console open/closed pairs")
    parser.add_argument("--round-s", type=float, default=8.0)
    parser.add_argument("--polls", type=int, default=100, help="quiet /v1/stats and /metrics calls timed")
    add_serve_arguments(parser)
    parser.set_defaults(host_bound=False)  # grpc_bench's config_toml reads it
    return parser.parse_args(argv)


if __name__ == "__main__":
    print_machine()
    print_figures(asyncio.run(main(parse_args())))
