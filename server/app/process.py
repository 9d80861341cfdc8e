"""The `gliclass-stream serve` process: one runtime, the gRPC edge, the HTTP edge and the Kafka worker.

`serve` composes the edges on one model pool and one event loop: the runtime, the gRPC server
(`server.grpc`), the optional HTTP edge (`server.http`, with `[http] address`, wired by
`server.app.embed`) and the optional Kafka worker (`worker`, with a `[kafka]` section). Signals
come through `server.app.supervisor`: SIGTERM (health NOT_SERVING, in-flight work finishes within
the grace period, exit 0), SIGHUP reload (label sets for gRPC, routes and label sets for the
worker, API keys; the rest needs a restart). A Kafka worker that stops turns health NOT_SERVING
and exits non-zero. Only the application brings the edges together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gliclass_core import telemetry
from gliclass_core.auth import KeyStore, parse_auth_config, read_keys
from gliclass_core.config import AppConfig
from gliclass_core.errors import ConfigError
from server.app.supervisor import EXIT_OK, ServeError, Supervisor, model_failure
from server.grpc.config import GrpcConfig
from server.grpc.server import GrpcServer
from server.http.config import HttpConfig

log = logging.getLogger(__name__)

WORKER_POLL_S = 0.2


async def serve(
    app_config: AppConfig,
    config: GrpcConfig,
    *,
    on_started: Callable[[GrpcServer], None] | None = None,
    stop_event: asyncio.Event | None = None,
    config_path: str | None = None,
    prometheus_registry: Any = None,
) -> int:
    """Run the runtime, the gRPC server and (with a [kafka] section) the Kafka worker until SIGTERM/SIGINT.

    With `[http] address` set, the HTTP edge runs beside gRPC on this loop (`server.http`);
    `prometheus_registry` is what its `/metrics` renders. SIGHUP re-reads `config_path` (see `reload`).
    """
    from gliclass_core.runtime import Runtime
    from server.grpc.auth import AuthInterceptor

    # Config problems (unreadable keys, plaintext HTTP beside mutual TLS) stop us before the model loads.
    keys = KeyStore(parse_auth_config(app_config.section("auth")))
    http_config = http_config_for(app_config, config)
    supervisor = Supervisor("serve")
    runtime = Runtime.from_config(app_config)
    telemetry.observe_runtime(runtime)
    runtime.start()
    server = GrpcServer(runtime, config)
    # Before the HTTP edge's item counter: a refused call's items are never counted.
    server.interceptors.append(AuthInterceptor(keys))
    worker = None
    http = None
    http_edge = None
    if http_config is not None:
        from server.app.embed import attach

        http_edge = attach(http_config, server, keys)
    try:
        port = await server.start()
        host = config.address.rsplit(":", 1)[0]
        supervisor.say(f"listening on {host}:{port}", stdout=True)
        if "kafka" in app_config.raw:
            # Lazy: only deployments with a [kafka] section need the worker (and confluent_kafka).
            from worker.app import KafkaWorker

            worker = KafkaWorker(runtime, app_config)
            worker.start()
        if http_edge is not None:
            http = await http_edge(lambda: worker, prometheus_registry)
        server.http = http
        if on_started is not None:
            on_started(server)
        stop = stop_event or asyncio.Event()
        reloads: set[asyncio.Task[bool]] = set()

        def on_sighup() -> None:
            # Off the loop: reading the file and waiting for the worker to pick up its routes block.
            task = asyncio.create_task(
                asyncio.to_thread(reload, config_path, app_config, server, worker, keys)
            )
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        supervisor.install(loop=asyncio.get_running_loop(), on_stop=stop.set, on_reload=on_sighup)
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(server.load_failed.wait())
        watched: list[asyncio.Task[Any]] = [stopped, failed]
        if worker is not None:
            watched.append(asyncio.create_task(_worker_stopped(worker)))
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        for task in watched:
            task.cancel()
        if server.load_error is not None:
            raise ServeError(model_failure(server.load_error, server.was_serving)) from server.load_error
        if worker is not None and not worker.running and not stop.is_set():
            # Half a server must not look healthy: NOT_SERVING now, then exit non-zero so that
            # compose / Kubernetes restart the process (which re-reads from the committed offsets).
            await server.set_not_serving()
            log.error("the kafka worker stopped: %s; health NOT_SERVING, exiting", worker.error)
            raise ServeError(f"the kafka worker stopped: {worker.error}") from worker.error
        supervisor.say("shutting down")
    finally:
        grace = config.shutdown_grace_s
        stops: list[Any] = [server.stop(grace)]
        if worker is not None:
            # The worker drains for its own [kafka] drain_timeout_ms, as `gliclass-stream worker` does.
            stops.append(asyncio.to_thread(worker.stop))
        if http is not None:
            stops.append(http.stop(grace))
        await asyncio.gather(*stops)
        await asyncio.to_thread(runtime.stop, grace_s=grace)
    return EXIT_OK


async def _worker_stopped(worker: Any) -> None:
    """Return once the Kafka worker's loop thread has ended (for any reason)."""
    while worker.running:
        await asyncio.sleep(WORKER_POLL_S)


def http_config_for(app_config: AppConfig, grpc_config: GrpcConfig) -> HttpConfig | None:
    """The `[http]` config when its address is set (None otherwise), checked against `[grpc.tls]`.

    With `[grpc.tls] require_client_cert`, a plaintext HTTP edge would serve the same API without
    the client certificates gRPC demands: refused, unless it listens on loopback only (then a
    warning), since only this machine can reach it there.
    """
    from server.http.config import parse_http_config

    http_config = parse_http_config(app_config.section("http"))
    if not http_config.enabled:
        return None
    tls = grpc_config.tls
    if tls is not None and tls.require_client_cert and http_config.tls is None:
        problem = (
            "[grpc.tls] requires client certificates but [http] serves the same API in plaintext "
            "without them; add [http.tls] (the same files work, with require_client_cert = true)"
        )
        if not http_config.on_loopback:
            raise ConfigError(problem)
        log.warning("%s. Allowed only because [http] address is loopback.", problem.upper())
    return http_config


def reload(
    path: str | None,
    running: AppConfig,
    server: GrpcServer,
    worker: Any = None,
    keys: KeyStore | None = None,
) -> bool:
    """Re-read the config file; apply its label sets, API keys and the worker's routes; True when applied.

    Everything is validated before anything changes: a bad file is logged and the running config
    stays. `[model]`, `[batching]` and `[grpc]` changes take effect only after a restart.
    """
    from server.app.reload import reload_config
    from server.grpc.config import parse_grpc_config

    def apply(new: AppConfig) -> None:
        parse_grpc_config(new.section("grpc"))  # so the file will also start the next time
        auth = parse_auth_config(new.section("auth"))
        read_keys(auth)  # unreadable keys refuse the whole reload, before anything changes
        if worker is not None:
            worker.reload(new)  # validates [kafka] before it changes anything; raises when invalid
        server.servicer.set_label_sets(new.label_sets)
        if keys is not None:
            log.info("reloaded: %d API keys", keys.reload(auth))
        restart_only = [s for s in ("model", "batching", "grpc") if new.raw.get(s) != running.raw.get(s)]
        if restart_only:
            log.warning("reload: [%s] changed; that takes effect after a restart", "], [".join(restart_only))
        log.info("reloaded: %d label sets", len(new.label_sets))

    applied = reload_config(path, apply)
    if applied:
        Supervisor("serve").say("reloaded label sets")
    return applied
