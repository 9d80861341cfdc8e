"""`gliclass-stream dev`: embedded broker + example topics and label sets + serve with the builtin model.

Everything is local and in memory; Ctrl-C stops the server, the worker and the broker.
"""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLE_ROUTES = (
    ("tickets", "support"),
    ("posts", "topics"),
)
EXAMPLE_LABEL_SETS = {
    "support": {"labels": ["billing", "bug report", "feature request", "account access"], "threshold": 0.5},
    "topics": {"labels": ["sport", "politics", "technology", "science", "entertainment"], "threshold": 0.5},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="builtin:minilm", help="model id (default builtin:minilm)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=9092,
        help="broker port on 127.0.0.1 (default 9092; 0 or busy: a free one)",
    )
    parser.add_argument(
        "--grpc-address", default="127.0.0.1:50051", help="gRPC listen address (port 0: a free one)"
    )
    parser.add_argument(
        "--http-address",
        default="127.0.0.1:8080",
        help="HTTP address of the JSON API, /metrics and the web console (busy: a free port)",
    )


def dev_config(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    """The config `dev` runs with (also what the printed TOML shows)."""
    return {
        "model": {"id": args.model, "device": args.device},
        "label_sets": EXAMPLE_LABEL_SETS,
        "grpc": {"address": args.grpc_address},
        "http": {"address": args.http_address},
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": "gliclass-dev",
            "consumer": {"session.timeout.ms": 6000},
            "routes": [
                {"input": topic, "output": f"{topic}.scored", "dlq": f"{topic}.dlq", "label_set": label_set}
                for topic, label_set in EXAMPLE_ROUTES
            ],
        },
    }


def instructions(bootstrap: str, grpc_address: str | None, console_url: str | None = None) -> str:
    """What `dev` prints: where things are and copy-paste commands to produce and consume."""
    lines = [
        "",
        "gliclass-stream dev is running (Ctrl-C stops everything)",
        f"  kafka bootstrap servers: {bootstrap}",
        "  routes: "
        + ", ".join(f"{t} -> {t}.scored ({s}), bad events -> {t}.dlq" for t, s in EXAMPLE_ROUTES),
    ]
    if grpc_address:
        lines.append(f"  gRPC: {grpc_address} (service gliclass.v1.Classifier, reflection on)")
    if console_url:
        lines.append(
            f"  web console: {console_url} (HTTP API {console_url}v1/..., metrics {console_url}metrics)"
        )
    if console_url:
        lines += [
            "",
            "Classify over HTTP:",
            f"  curl -s {console_url}v1/classify -H 'Content-Type: application/json' "
            '-d \'{"items": [{"text": "My card was charged twice", "label_set": "support"}]}\'',
        ]
    if grpc_address:
        lines += [
            "",
            "Classify over gRPC (grpcurl, or: buf curl --protocol grpc --http2-prior-knowledge):",
            f'  grpcurl -plaintext -d \'{{"items": [{{"text": "My card was charged twice", '
            f'"labelSet": "support"}}]}}\' {grpc_address} gliclass.v1.Classifier/Classify',
        ]
    lines += [
        "",
        "Produce events (a plain-text value, or JSON {id, text, labels?, label_set?}):",
        "  python - <<'EOF'",
        "from confluent_kafka import Producer",
        f"p = Producer({{'bootstrap.servers': '{bootstrap}'}})",
        "p.produce('tickets', key=b't-1', value=b'My card was charged twice')",
        'p.produce(\'posts\', value=b\'{"id": "p-1", "text": "The match ended in a draw"}\')',
        "p.flush()",
        "EOF",
        "Consume the scored events (and dead letters):",
        "  python - <<'EOF'",
        "from confluent_kafka import Consumer",
        f"c = Consumer({{'bootstrap.servers': '{bootstrap}', 'group.id': 'me',",
        "              'auto.offset.reset': 'earliest'})",
        "c.subscribe(['tickets.scored', 'posts.scored', 'tickets.dlq', 'posts.dlq'])",
        "for m in iter(lambda: c.poll(10.0), None):",
        "    print(m.topic(), m.headers() or '', m.value().decode(errors='replace'))",
        "EOF",
        "",
    ]
    return "\n".join(lines)


def _free_if_busy(address: str) -> str:
    """`address`, or the same host with port 0 (a free one) when something already listens there."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.socket() as sock:
            sock.bind((host.strip("[]") or "0.0.0.0", int(port)))
    except (OSError, ValueError):
        return f"{host}:0"
    return address


def run(args: argparse.Namespace) -> int:
    import importlib.util
    import logging

    from gliclass_core.config import parse_config
    from gliclass_core.telemetry import setup as setup_telemetry
    from server.app.supervisor import EXIT_OK, Supervisor
    from worker.broker import EmbeddedBroker, create_topics, free_port

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # OTEL_* variables (off unless they name an exporter), plus the Prometheus reader for /metrics.
    telemetry = setup_telemetry("gliclass-stream", prometheus=True)
    port = args.kafka_port
    if port == 0:
        port = free_port()
    else:
        try:
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
        except OSError:
            port = free_port()
    args.http_address = _free_if_busy(args.http_address)
    supervisor = Supervisor("dev")
    broker = EmbeddedBroker(port=port).start()
    bootstrap = broker.bootstrap_servers
    try:
        topics = {}
        for topic, _ in EXAMPLE_ROUTES:
            topics.update({topic: 3, f"{topic}.scored": 3, f"{topic}.dlq": 3})
        create_topics(bootstrap, topics)
        app_config = parse_config(dev_config(bootstrap, args))
        if importlib.util.find_spec("server.app.process") is not None:
            import asyncio

            from server.app.process import serve
            from server.grpc.config import parse_grpc_config

            grpc_config = parse_grpc_config(app_config.section("grpc"))

            def started(server: Any) -> None:
                from server.app.embed import url
                from server.http.config import parse_http_config

                host = grpc_config.address.rsplit(":", 1)[0]
                http = getattr(server, "http", None)
                console = url(parse_http_config(app_config.section("http")), http.port) if http else None
                print(instructions(bootstrap, f"{host}:{server.port}", console), flush=True)

            return asyncio.run(
                serve(
                    app_config,
                    grpc_config,
                    on_started=started,
                    prometheus_registry=telemetry.prometheus_registry,
                )
            )

        # No gRPC server in this build: run the worker alone.
        from gliclass_core.runtime import Runtime
        from worker.app import KafkaWorker

        supervisor.say("gRPC server not available; running the Kafka worker alone")
        supervisor.install(reload=False)
        runtime = Runtime.from_config(app_config)
        runtime.start()
        worker = KafkaWorker(runtime, app_config)
        worker.start()
        print(instructions(bootstrap, None), flush=True)
        supervisor.wait_for_stop()
        worker.stop(10)  # seconds of draining (closing gets a few more)
        runtime.stop(grace_s=5)
        return EXIT_OK
    finally:
        telemetry.shutdown()  # flush what is still buffered
        broker.stop()
        supervisor.say("stopped")
