"""JSON from untrusted sources (Kafka values, stdin lines): nesting depth is checked before parsing.

`loads` refuses, with a `JsonRejected` naming the reason, values nested deeper than `max_depth`
(found by a linear pre-scan over the raw bytes, so the recursive parser never goes deep), integers
longer than MAX_INT_DIGITS digits (Python's own int-string limit would raise a bare ValueError),
and non-finite numbers (`NaN`, `Infinity`, or a float literal that overflows a double).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_DEPTH = 64
MAX_INT_DIGITS = 64


class JsonRejected(ValueError):
    """A value refused before or while parsing; `reason` is too_deep, invalid_number or invalid_json."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def deeper_than(raw: bytes, limit: int) -> bool:
    """True when the brackets outside string literals of `raw` nest more than `limit` levels."""
    # Cannot nest deeper than it has opening brackets: the common case costs one vectorised count
    # ("[" is 0x5B, "{" 0x7B; x | 0x20 == 0x7B holds for exactly these two bytes).
    if len(raw) < 4096:
        opening = raw.count(b"[") + raw.count(b"{")
    else:
        opening = int(np.count_nonzero((np.frombuffer(raw, dtype=np.uint8) | 0x20) == 0x7B))
    if opening <= limit:
        return False
    return _max_depth(np.frombuffer(raw, dtype=np.uint8)) > limit


def _max_depth(data: np.ndarray) -> int:
    """Deepest bracket nesting outside string literals, in vectorised passes (no per-byte Python)."""
    if not data.size:
        return 0
    index = np.arange(data.size, dtype=np.int32 if data.size < 2**31 else np.int64)
    # A quote is escaped when an odd run of backslashes ends right before it.
    backslash = data == ord("\\")
    last_other = np.maximum.accumulate(np.where(backslash, -1, index))
    run_before = np.empty_like(index)
    run_before[0] = 0
    run_before[1:] = index[:-1] - last_other[:-1]
    quote = (data == ord('"')) & (run_before % 2 == 0)
    outside = np.cumsum(quote) % 2 == 0  # even number of quotes so far: not inside a string
    step = ((data == ord("[")) | (data == ord("{"))).astype(np.int32)
    step -= (data == ord("]")) | (data == ord("}"))
    step[~outside] = 0
    return int(np.cumsum(step).max(initial=0))


def _int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonRejected(
            "invalid_number", f"an integer of {len(digits)} digits; at most {MAX_INT_DIGITS} are accepted"
        )
    return int(digits)


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise JsonRejected("invalid_number", f"the number {literal[:40]!r} does not fit a double")
    return value


def _constant(name: str) -> Any:
    raise JsonRejected("invalid_number", f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_int=_int, parse_float=_float, parse_constant=_constant)


def loads(text: str, max_depth: int = MAX_DEPTH, raw: bytes | None = None) -> Any:
    """Parse `text` as JSON within the bounds above; raise JsonRejected naming what is wrong.

    `raw`: the bytes `text` was decoded from, when the caller has them (saves encoding it again).
    """
    if raw is None:
        raw = text.encode("utf-8", "surrogatepass")
    if deeper_than(raw, max_depth):
        raise JsonRejected("too_deep", f"JSON nested more than {max_depth} levels deep")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JsonRejected("invalid_json", f"not valid JSON: {exc}") from exc


@dataclass(frozen=True)
class JsonShape:
    """What a linear pre-scan tells about raw JSON before it is parsed (strings excluded).

    `values`: brackets and commas outside strings, a bound on how many values the parser would
    build (a body of a million `{}` has two million); `objects_at`: objects opened at each nesting
    depth (1 is the top level: `{"items": [{...}]}` has its items at depth 3).
    """

    depth: int
    values: int
    objects_at: tuple[int, ...]


def shape(raw: bytes, depths: int = 4) -> JsonShape:
    """Pre-scan `raw` in vectorised passes (no per-byte Python); counts objects up to `depths` deep."""
    data = np.frombuffer(raw, dtype=np.uint8)
    if not data.size:
        return JsonShape(0, 0, (0,) * depths)
    outside = _outside_strings(data)
    opening = ((data == ord("[")) | (data == ord("{"))) & outside
    closing = ((data == ord("]")) | (data == ord("}"))) & outside
    level = np.cumsum(opening.view(np.int8) - closing.view(np.int8), dtype=np.int32)
    objects = level[(data == ord("{")) & outside]  # the depth each object opens at
    counts = tuple(int(np.count_nonzero(objects == d)) for d in range(1, depths + 1))
    values = int(np.count_nonzero(opening)) + int(np.count_nonzero((data == ord(",")) & outside))
    return JsonShape(int(level.max(initial=0)), values, counts)


def _outside_strings(data: np.ndarray) -> np.ndarray:
    """For each byte: True when it is outside a string literal (quotes themselves count as inside)."""
    quote = data == ord('"')
    if np.count_nonzero(data == ord("\\")):
        # A quote is escaped when an odd run of backslashes ends right before it.
        index = np.arange(data.size, dtype=np.int32 if data.size < 2**31 else np.int64)
        last_other = np.maximum.accumulate(np.where(data == ord("\\"), -1, index))
        run_before = np.empty_like(index)
        run_before[0] = 0
        run_before[1:] = index[:-1] - last_other[:-1]
        quote &= run_before % 2 == 0
    inside = np.bitwise_xor.accumulate(quote.view(np.uint8))
    return np.asarray((inside == 0) & ~quote)
