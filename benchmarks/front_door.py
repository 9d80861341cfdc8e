"""Front-door figures: the event loop under hostile bodies, and what each edge costs over a direct call.

Usage (prints the figures; keep it short on a shared machine):

    python benchmarks/front_door.py --calls 30 --before /work/main [--floods-before]

For each checkout (`--before` first when given, then this one), one `gliclass-stream serve`
subprocess (builtin model, CPU, gRPC and `[http]` on loopback) run from that checkout's code:
1. hostile bodies: while a client posts 16 KB of gzip-compressed newlines (16 MiB unpacked) and
   4 MiB of plain newlines to `/v1/classify/stream`, and a 3.9 MB `{"items":[{},{},...]}` (1.3 M
   items) to `/v1/classify`, another polls `/healthz`; the worst `/healthz` latency is printed
   (target <= 1 s), with the time each hostile request took to be refused;
2. overhead: one caller, one short text a call, alternating a direct `ClassifyService.classify`
   in this process (this checkout's runtime, the baseline for both), an HTTP `POST /v1/classify`
   and a gRPC `Classify`; the medians, and each edge's median minus the direct median.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import grpc

from gliclass_core.config import parse_config
from gliclass_core.runtime import Runtime
from gliclass_core.service import CallContext, ItemRequest, RequestLimits, resolve_items
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc

HERE = Path(__file__).resolve().parents[1]
CONFIG = """
[model]
id = "builtin:minilm"
device = "cpu"

[grpc]
address = "127.0.0.1:0"

[http]
address = "127.0.0.1:0"
"""
LABELS = ["billing", "bug report", "feature request"]
TEXTS = ["I was charged twice this month", "The app crashes on start", "Please add a dark mode"]


def start_serve(code: Path, config: Path) -> tuple[subprocess.Popen[str], str, str]:
    """`serve` run from checkout `code`; its gRPC address and HTTP URL once /readyz answers 200."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLICLASS_")}
    env["PYTHONPATH"] = str(code)
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.app.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=code,
        env=env,
    )
    assert proc.stdout is not None
    address = url = ""
    for line in proc.stdout:
        if "listening on" in line:
            address = line.rsplit(" ", 1)[-1].strip()
        if "HTTP on" in line:
            url = line.rsplit(" ", 1)[-1].strip().rstrip("/").replace("localhost", "127.0.0.1")
        if address and url:
            break
    else:
        raise SystemExit(f"serve exited with {proc.wait()}")
    import urllib.request

    end = time.monotonic() + 600
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
                if response.status == 200:
                    return proc, address, url
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("serve did not become ready")


async def hostile(url: str) -> dict[str, float]:
    """Worst /healthz latency while the hostile bodies are refused; how long each refusal took."""
    latencies: list[float] = []
    done = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=600)

    async def probe() -> None:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not done.is_set():
                started = time.perf_counter()
                async with session.get(url + "/healthz") as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)

    async def post(path: str, body: bytes, headers: dict[str, str]) -> float:
        started = time.perf_counter()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url + path, data=body, headers=headers) as response:
                await response.read()
        return time.perf_counter() - started

    prober = asyncio.create_task(probe())
    await asyncio.sleep(0.2)
    ndjson = {"Content-Type": "application/x-ndjson"}
    refused = await asyncio.gather(
        post(
            "/v1/classify/stream",
            gzip.compress(b"\n" * (16 << 20), 9),
            {**ndjson, "Content-Encoding": "gzip"},
        ),
        post("/v1/classify/stream", b"\n" * (4 << 20), ndjson),
        post(
            "/v1/classify", b'{"items":[' + b"{}," * 1_300_000 + b"{}]}", {"Content-Type": "application/json"}
        ),
    )
    await asyncio.sleep(0.2)
    done.set()
    await prober
    return {
        "healthz_worst_s": max(latencies),
        "healthz_p50_s": statistics.median(latencies),
        "gzip_flood_s": refused[0],
        "newline_flood_s": refused[1],
        "million_items_s": refused[2],
    }


async def overhead(runtime: Runtime, url: str, address: str, calls: int) -> dict[str, float]:
    """Medians of direct, HTTP and gRPC single-item calls, alternated so they share the noise."""
    direct: list[float] = []
    http: list[float] = []
    rpc: list[float] = []
    limits = RequestLimits()
    async with aiohttp.ClientSession() as session, grpc.aio.insecure_channel(address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        for i in range(calls):
            text = f"{TEXTS[i % len(TEXTS)]} #{i}"
            started = time.perf_counter()
            items = resolve_items([ItemRequest(text=text, labels=tuple(LABELS))], runtime.label_sets, limits)
            outcomes = await runtime.classify(items, CallContext())
            assert outcomes[0].error is None
            direct.append(time.perf_counter() - started)
            started = time.perf_counter()
            body = {"items": [{"id": "x", "text": text, "labels": LABELS}]}
            async with session.post(url + "/v1/classify", json=body) as response:
                assert response.status == 200, await response.text()
                await response.read()
            http.append(time.perf_counter() - started)
            started = time.perf_counter()
            await stub.Classify(
                pb.ClassifyRequest(items=[pb.Item(id="x", text=text, labels=LABELS)]), timeout=60
            )
            rpc.append(time.perf_counter() - started)
    d, h, g = (statistics.median(v) * 1000 for v in (direct, http, rpc))
    return {
        "direct_ms": d,
        "http_ms": h,
        "grpc_ms": g,
        "http_over_direct_ms": h - d,
        "grpc_over_direct_ms": g - d,
    }


async def measure(code: Path, runtime: Runtime, config: Path, calls: int, floods: bool) -> dict[str, float]:
    proc, address, url = start_serve(code, config)
    try:
        figures = await overhead(runtime, url, address, calls)
        print(code, figures, flush=True)
        if floods:
            figures.update(await hostile(url))
            print(code, figures, flush=True)
        return figures
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


async def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gliclass.toml"
        config.write_text(CONFIG)
        runtime = Runtime.from_config(parse_config({"model": {"id": "builtin:minilm", "device": "cpu"}}))
        runtime.start()
        if not runtime.wait_ready(600):
            raise SystemExit(f"runtime failed: {runtime.error}")
        try:
            results: dict[str, dict[str, float]] = {}
            if args.before:
                before = Path(args.before).resolve()
                results["before"] = await measure(before, runtime, config, args.calls, args.floods_before)
            results["after"] = await measure(HERE, runtime, config, args.calls, True)
            return results
        finally:
            runtime.stop(1.0)


def print_results(results: dict[str, dict[str, float]]) -> None:
    keys = list(results["after"])
    print(f"{'figure':<22}" + "".join(f"{name:>12}" for name in results))
    for key in keys:
        print(f"{key:<22}" + "".join(f"{results[name].get(key, float('nan')):>12.3f}" for name in results))
    if "before" in results:
        for edge in ("http", "grpc"):
            key = f"{edge}_over_direct_ms"
            before, after = results["before"][key], results["after"][key]
            print(f"{edge} overhead after/before: {after / before:.2f}" if before > 0 else f"{edge}: n/a")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60, help="single-item calls per edge")
    parser.add_argument("--before", help="another checkout to measure first (e.g. the main branch)")
    parser.add_argument(
        "--floods-before",
        action="store_true",
        help="also send the hostile bodies to --before (an old checkout may hold its loop for minutes)",
    )
    print_results(asyncio.run(main(parser.parse_args())))
