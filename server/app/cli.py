"""The `gliclass-stream` command: dispatches to one module per subcommand in server/app/commands/.

Subcommand modules import heavy dependencies (torch, grpc, confluent_kafka) inside `run`, so
`--help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import sys
from collections.abc import Sequence

from gliclass_core.errors import GliclassError

# name -> (module under server.app.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "classify": ("classify", "classify texts from arguments or JSON lines on stdin"),
    "serve": ("serve", "run the gRPC server (and the Kafka worker if [kafka] is configured)"),
    "worker": ("worker", "run the Kafka worker alone"),
    "dev": ("dev", "everything local: embedded broker + serve + builtin model"),
    "bench": ("bench", "measure throughput, latency and padding efficiency of the pool"),
    "train": ("train", "fine-tune a model on JSON lines"),
    "eval": ("eval", "evaluate a model on labelled JSON lines"),
    "health": ("health", "query a server's gRPC health service (exit 0 when SERVING)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gliclass-stream", description="Real-time zero-shot text classification over gRPC and Kafka."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"server.app.commands.{module_name}")
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # A fatal signal (a crash in native code, an abort) prints every thread's Python stack to stderr.
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no file descriptor (in-process use)
        faulthandler.enable()
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except GliclassError as exc:
        print(f"gliclass-stream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
