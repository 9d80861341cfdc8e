"""`gliclass-stream worker --config FILE`: the Kafka worker alone (SIGHUP reloads, SIGTERM drains)."""

from __future__ import annotations

import argparse


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
    import threading

    from gliclass_core.auth import KeyStore, parse_auth_config, read_keys
    from gliclass_core.config import AppConfig, load_config
    from gliclass_core.runtime import Runtime
    from gliclass_core.telemetry import observe_runtime
    from gliclass_core.telemetry import setup as setup_telemetry
    from server.app.reload import reload_config
    from server.app.supervisor import EXIT_FAILED, EXIT_OK, Supervisor, model_failure
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

    # Signals wake the loop below; a SIGTERM that arrives while a SIGHUP reload runs still stops
    # the process right after it (the supervisor never clears a stop request).
    supervisor = Supervisor("worker")
    supervisor.install()

    runtime = Runtime.from_config(app_config)
    observe_runtime(runtime)
    runtime.start()
    worker = KafkaWorker(runtime, app_config)
    http = None
    if http_config.enabled:
        from server.app.embed import url
        from server.http.background import BackgroundHttp

        http = BackgroundHttp(http_config, runtime, telemetry.prometheus_registry, lambda: worker, keys)
        supervisor.say(f"HTTP on {url(http_config, http.start())}")

    def apply(new: AppConfig) -> None:
        auth = parse_auth_config(new.section("auth"))
        read_keys(auth)  # validate the keys before the worker changes anything
        worker.reload(new)
        keys.reload(auth)

    code = EXIT_OK
    announced = False
    try:
        worker.start()
        while True:
            requested = supervisor.next_signal(0.5)
            if requested == "stop":
                break
            if requested == "reload":
                if reload_config(args.config, apply):
                    supervisor.say("reloaded routes and label sets")
                continue
            if runtime.error is not None:
                log.error("%s", model_failure(runtime.error, announced))
                code = EXIT_FAILED
                break
            if not worker.running:
                log.error("the kafka worker stopped: %s", worker.error)
                code = EXIT_FAILED
                break
            if not announced and runtime.ready:
                announced = True
                supervisor.say(f"ready ({runtime.info.model_id})")
    finally:
        supervisor.say("draining")
        clean = worker.stop(args.drain_timeout)
        if http is not None:
            http.stop()
        runtime.stop(grace_s=5.0)
        if not clean and code == EXIT_OK and worker.error is not None:
            code = EXIT_FAILED
    telemetry.shutdown()  # flush what is still buffered
    alive = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if alive:
        log.warning("threads still running at exit: %s", ", ".join(alive))
    supervisor.say("stopped")
    return code
