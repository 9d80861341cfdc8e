"""Cost of the bounded event decoding, next to plain `json.loads` of the same bytes, in one run.

Prints microseconds per event for `worker.codec.decode_event` (size bound, depth pre-scan, integer
and finiteness checks, field checks) and for `json.loads` alone (no checks at all; for a plain-text
value, which is not parsed, just the prefix test), plus the time
decode_event takes to refuse the hostile values (100k-deep nesting, a 5,000-digit id, 1 MB of bytes).

Usage:  python benchmarks/codec_bench.py [--repeat 20000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial

from machine import print_machine  # benchmarks/machine.py: the machine line

from worker.codec import BadEvent, decode_event

GOOD = {
    "json event, 3 labels": json.dumps(
        {"id": "t-1", "text": "I was charged twice for my order " * 4,
         "labels": ["billing", "bug report", "feature request"]}
    ).encode(),
    "plain text": ("the striker scored twice as United beat City " * 5).encode(),
    "json event, 10 KB text": json.dumps({"id": 7, "text": "word " * 2000}).encode(),
}  # fmt: skip
HOSTILE = {
    "100k-deep array (200 KB)": b'{"text": "x", "e": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "100k-deep object (600 KB)": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "5,000-digit id": b'{"id": ' + b"9" * 5000 + b', "text": "hello"}',
    "1 MB of bytes": bytes(range(256)) * 4096,
    "999 KB of zero-width spaces": "\u200b".encode() * 333_000,
    "999 KB of NUL": b"\x00" * 999_000,
}


def per_call_us(fn: Callable[[], object], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat * 1e6


def refuse(value: bytes) -> str:
    try:
        decode_event(value)
    except BadEvent as bad:
        return bad.reason
    return "decoded"


def _plain_decode(text: str) -> object:
    """The baseline: what a bare json.loads of the same value costs."""
    return json.loads(text) if text.startswith("{") else text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20000)
    args = parser.parse_args()
    print_machine()
    print(f"{'event':28s} {'decode_event':>13s} {'json.loads':>11s} {'ratio':>6s}")
    for name, value in GOOD.items():
        ours = per_call_us(partial(decode_event, value), args.repeat)
        text = value.decode()
        plain = per_call_us(partial(_plain_decode, text), args.repeat)
        print(f"{name:28s} {ours:10.2f} us {plain:8.2f} us {ours / plain:5.2f}x")
    print()
    for name, value in HOSTILE.items():
        started = time.perf_counter()
        reason = refuse(value)
        print(f"{name:28s} -> {reason:15s} in {(time.perf_counter() - started) * 1000:6.2f} ms")


if __name__ == "__main__":
    main()
