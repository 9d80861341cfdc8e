"""`gliclass-stream health`: ask a server's grpc.health.v1 service; exit 0 only when SERVING."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default="localhost:50051", metavar="HOST:PORT", help="server address")
    parser.add_argument("--service", default="", help="service name to check ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to wait (default 5)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS (system roots unless --ca-file)")
    parser.add_argument(
        "--ca-file", metavar="PEM", help="CA that signed the server certificate (implies --tls)"
    )
    parser.add_argument(
        "--cert-file", metavar="PEM", help="client certificate for mutual TLS (implies --tls)"
    )
    parser.add_argument("--key-file", metavar="PEM", help="client private key for mutual TLS")
    parser.add_argument("--server-name", metavar="NAME", help="expected name in the server certificate")


def run(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from server.grpc.tls import channel_credentials

    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    if args.tls or args.ca_file or args.cert_file or args.key_file:
        creds = channel_credentials(args.ca_file, args.cert_file, args.key_file)
        channel = grpc.secure_channel(args.address, creds, options=options)
    else:
        channel = grpc.insecure_channel(args.address, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service),
                timeout=args.timeout,
                wait_for_ready=False,
            )
        except grpc.RpcError as exc:
            print(f"{args.address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1
