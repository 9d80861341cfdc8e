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
    from server.app.process import serve
    from server.grpc.config import parse_grpc_config
    from server.http.config import parse_http_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app_config = load_config(args.config)
    # OTEL_* variables (off unless they name an exporter); [http] address adds the Prometheus reader.
    http_on = parse_http_config(app_config.section("http")).enabled
    telemetry = setup_telemetry("gliclass-stream", prometheus=http_on)
    grpc_config = parse_grpc_config(app_config.section("grpc"))
    if args.address:
        grpc_config = dataclasses.replace(grpc_config, address=args.address)
    try:
        return asyncio.run(
            serve(
                app_config,
                grpc_config,
                config_path=args.config,
                prometheus_registry=telemetry.prometheus_registry,
            )
        )
    finally:
        telemetry.shutdown()  # flush what is still buffered
