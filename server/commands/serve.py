"""`gliclass-stream serve`: the gRPC server, plus the Kafka worker when the config has [kafka]."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="TOML config file (GLICLASS_* variables override it)"
    )
    parser.add_argument("--address", metavar="HOST:PORT", help="listen address, overriding [grpc] address")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses
    import logging

    from gliclass_core.config import load_config
    from gliclass_core.telemetry import setup as setup_telemetry
    from server.app import serve
    from server.grpc_config import parse_grpc_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    telemetry = setup_telemetry("gliclass-stream")  # OTEL_* variables; off unless they name an exporter
    app_config = load_config(args.config)
    grpc_config = parse_grpc_config(app_config.section("grpc"))
    if args.address:
        grpc_config = dataclasses.replace(grpc_config, address=args.address)
    try:
        return asyncio.run(serve(app_config, grpc_config, config_path=args.config))
    finally:
        telemetry.shutdown()  # flush what is still buffered
