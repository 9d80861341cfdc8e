"""CLI options that choose how a loaded model runs, for the commands that load one."""

from __future__ import annotations

import argparse

from gliclass_core.devices import ENGINES


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --dtype and --engine (the names `gliclass_core.devices` knows)."""
    parser.add_argument(
        "--dtype",
        default=None,
        help="float32, float16, bfloat16 (default: by device); int8 with --engine onnx",
    )
    parser.add_argument("--engine", default="torch", choices=ENGINES, help="onnx: ONNX Runtime, CPU")
