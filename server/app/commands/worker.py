"""`gliclass-stream worker --config FILE`: the Kafka worker alone (SIGHUP reloads, SIGTERM drains)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", required=True, help="TOML config file (GLICLASS_* variables override it)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds to finish in-flight events on SIGTERM before closing "
        "(default: [kafka] drain_timeout_ms, 30 s)",
    )


def run(args: argparse.Namespace) -> int:
    import logging
    import signal
    import sys
    import threading

    from gliclass_core.auth import KeyStore, parse_auth_config, read_keys
    from gliclass_core.config import AppConfig, load_config
    from gliclass_core.runtime import Runtime
    from gliclass_core.telemetry import observe_runtime
    from gliclass_core.telemetry import setup as setup_telemetry
    from server.app.reload import reload_config
    from server.http.config import parse_http_config
    from worker.app import KafkaWorker
    from worker.config import parse_kafka_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("gliclass.worker")
    app_config = load_config(args.config)
    parse_kafka_config(app_config)  # fail fast, before loading a model, on a bad [kafka] section
    http_config = parse_http_config(app_config.section("http"))
    keys = KeyStore(parse_auth_config(app_config.section("auth")))  # guards the HTTP edge's routes
    # OTEL_* variables (off unless they name an exporter); [http] address adds the Prometheus reader.
    telemetry = setup_telemetry("gliclass-worker", prometheus=http_config.enabled)

    # Each signal sets its own flag and wakes the main loop; `stop` is never cleared, so a SIGTERM
    # that arrives while a SIGHUP reload runs still stops the process right after it.
    stop = threading.Event()
    reload = threading.Event()
    wake = threading.Event()

    def on_signal(flag: threading.Event) -> Callable[..., None]:
        def handler(*_: object) -> None:
            flag.set()
            wake.set()

        return handler

    signal.signal(signal.SIGTERM, on_signal(stop))
    signal.signal(signal.SIGINT, on_signal(stop))
    signal.signal(signal.SIGHUP, on_signal(reload))

    runtime = Runtime.from_config(app_config)
    observe_runtime(runtime)
    runtime.start()
    worker = KafkaWorker(runtime, app_config)
    http = None
    if http_config.enabled:
        from server.app.embed import url
        from server.http.background import BackgroundHttp

        http = BackgroundHttp(http_config, runtime, telemetry.prometheus_registry, lambda: worker, keys)
        print(
            f"gliclass-stream worker: HTTP on {url(http_config, http.start())}", file=sys.stderr, flush=True
        )

    def apply(new: AppConfig) -> None:
        auth = parse_auth_config(new.section("auth"))
        read_keys(auth)  # validate the keys before the worker changes anything
        worker.reload(new)
        keys.reload(auth)

    code = 0
    announced = False
    try:
        worker.start()
        while True:
            wake.wait(0.5)
            wake.clear()
            if stop.is_set():
                break
            if reload.is_set():
                reload.clear()
                if reload_config(args.config, apply):
                    print(
                        "gliclass-stream worker: reloaded routes and label sets", file=sys.stderr, flush=True
                    )
                continue
            if runtime.error is not None:
                what = "the model pool stopped" if announced else "the model failed to load"
                log.error("%s: %s", what, runtime.error)
                code = 1
                break
            if not worker.running:
                log.error("the kafka worker stopped: %s", worker.error)
                code = 1
                break
            if not announced and runtime.ready:
                announced = True
                print(f"gliclass-stream worker: ready ({runtime.info.model_id})", file=sys.stderr, flush=True)
    finally:
        print("gliclass-stream worker: draining", file=sys.stderr, flush=True)
        clean = worker.stop(args.drain_timeout)
        if http is not None:
            http.stop()
        runtime.stop(grace_s=5.0)
        if not clean and code == 0 and worker.error is not None:
            code = 1
    telemetry.shutdown()  # flush what is still buffered
    alive = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if alive:
        log.warning("threads still running at exit: %s", ", ".join(alive))
    print("gliclass-stream worker: stopped", file=sys.stderr, flush=True)
    return code
