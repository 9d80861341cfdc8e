"""Reliability diagram as a PNG, drawn in pure Python (no matplotlib/PIL dependency).

x: score bins 0..1; blue bars: the fraction of label slots in the bin that are true; red tick:
the bin's mean score; grey diagonal: perfect calibration. No text is drawn (no font dependency):
the numbers are in the JSON report next to it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from gliclass_core.training.evaluation import CalibrationBin

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GREY: Color = (170, 170, 170)
BLUE: Color = (66, 110, 200)
RED: Color = (210, 50, 40)


def _png(width: int, height: int, pixels: list[bytearray]) -> bytes:
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def reliability_png(bins: Sequence[CalibrationBin], path: str | Path, size: int = 400) -> Path:
    """Write the reliability diagram of `bins` to `path` and return it."""
    margin = 30
    plot = size - 2 * margin
    pixels = [bytearray(WHITE * size) for _ in range(size)]

    def put(x: int, y: int, color: Color) -> None:
        # (x, y) in plot coordinates, y upwards
        px, py = margin + x, size - margin - y
        if 0 <= px < size and 0 <= py < size:
            pixels[py][3 * px : 3 * px + 3] = bytes(color)

    n = max(len(bins), 1)
    for i, b in enumerate(bins):
        x0, x1 = i * plot // n + 1, (i + 1) * plot // n - 1
        if b.count:
            for x in range(x0, x1):
                for y in range(int(b.positive_rate * plot)):
                    put(x, y, BLUE)
                for dy in (-1, 0, 1):
                    put(x, int(b.mean_score * plot) + dy, RED)
    for t in range(plot + 1):
        put(t, t, GREY)
        put(t, 0, BLACK)
        put(0, t, BLACK)
    out = Path(path)
    out.write_bytes(_png(size, size, pixels))
    return out
