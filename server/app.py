"""Server lifecycle: build the grpc.aio server (servicer, health, reflection, TLS), start, drain, stop.

`GrpcServer` runs on an asyncio loop the caller owns (the `serve` command, or a test thread).
`serve` is the whole `gliclass-stream serve` process: runtime, gRPC, the optional Kafka worker,
SIGTERM handling (health NOT_SERVING, in-flight work finishes within the grace period, exit 0),
supervision (a Kafka worker that stops turns health NOT_SERVING and exits non-zero) and
SIGHUP reload (label sets for gRPC, routes and label sets for the worker; the rest needs a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gliclass_core import telemetry
from gliclass_core.config import AppConfig
from gliclass_core.errors import GliclassError
from server.errors import ErrorInterceptor
from server.grpc_config import GrpcConfig
from server.health import HealthServicer
from server.proto import classifier_pb2, classifier_pb2_grpc
from server.servicer import ClassifierServicer
from server.tls import server_credentials
from server.tracing import TracingInterceptor

log = logging.getLogger(__name__)

SERVICE_NAME = classifier_pb2.DESCRIPTOR.services_by_name["Classifier"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
READY_POLL_S = 0.05
WORKER_POLL_S = 0.2


class ServeError(GliclassError):
    """The server cannot keep running (the model failed to load, or its pool stopped)."""

    reason = "serve"


class GrpcServer:
    """One grpc.aio server over a runtime: Classifier + Health + reflection on one port."""

    def __init__(self, runtime: Any, config: GrpcConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.servicer = ClassifierServicer(runtime, config)
        self.health = HealthServicer()
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._ready_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.load_error: BaseException | None = None
        self.load_failed = asyncio.Event()
        self.was_serving = False  # load_error came after SERVING: the pool stopped, loading was fine
        #: Innermost interceptors added before `start` (the HTTP edge's per-edge item counter).
        self.interceptors: list[grpc.aio.ServerInterceptor] = []
        self.http: Any = None  # the HTTP edge serving beside this server, if any (server.http)

    async def start(self) -> int:
        """Bind and start serving; health stays NOT_SERVING until the runtime is warm. Return the port."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            # Never share a port silently with another server started on the same address.
            ("grpc.so_reuseport", 0),
        ]
        if self.config.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", self.config.max_concurrent_streams))
        # Tracing outermost: its span covers the whole call and sees the status errors map to.
        server = grpc.aio.server(
            interceptors=[TracingInterceptor(), ErrorInterceptor(), *self.interceptors], options=options
        )
        classifier_pb2_grpc.add_ClassifierServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, NOT_SERVING)
        if self.config.tls is not None:
            port = server.add_secure_port(self.config.address, server_credentials(self.config.tls))
        else:
            port = server.add_insecure_port(self.config.address)
        await server.start()
        self._server, self.port = server, port
        self._ready_task = asyncio.create_task(self._serve_when_ready())
        return port

    async def _serve_when_ready(self) -> None:
        # Poll rather than block a thread in wait_ready: the loop stays free and stop() can cancel.
        while not self._stopping:
            if self.runtime.ready:
                for service in ("", SERVICE_NAME):
                    await self.health.set(service, SERVING)
                log.info("model pool is warm: health SERVING")
                await self._watch_pool()
                return
            error = getattr(self.runtime, "error", None)
            if error is not None:
                self.load_error = error
                self.load_failed.set()
                return
            await asyncio.sleep(READY_POLL_S)

    async def _watch_pool(self) -> None:
        """While SERVING: if the pool stops (a replica gave up), go NOT_SERVING and report it."""
        while not self._stopping:
            error = getattr(self.runtime, "error", None)
            if error is not None:
                for service in ("", SERVICE_NAME):
                    await self.health.set(service, NOT_SERVING)
                log.error("model pool stopped: health NOT_SERVING (%s)", error)
                self.load_error, self.was_serving = error, True
                self.load_failed.set()
                return
            await asyncio.sleep(READY_POLL_S)

    async def stop(self, grace: float | None = None) -> None:
        """Go NOT_SERVING, refuse new calls, let in-flight calls finish within `grace` seconds."""
        self._stopping = True
        if self._ready_task is not None:
            self._ready_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ready_task
        # Health watchers hear NOT_SERVING before the port closes, and later sets are ignored.
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace_s if grace is None else grace)

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


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

    runtime = Runtime.from_config(app_config)
    telemetry.observe_runtime(runtime)
    runtime.start()
    server = GrpcServer(runtime, config)
    worker = None
    http = None
    http_edge = http_edge_for(app_config, server)
    try:
        port = await server.start()
        host = config.address.rsplit(":", 1)[0]
        print(f"gliclass-stream serve: listening on {host}:{port}", flush=True)
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
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        reloads: set[asyncio.Task[bool]] = set()

        def on_sighup() -> None:
            # Off the loop: reading the file and waiting for the worker to pick up its routes block.
            task = asyncio.create_task(asyncio.to_thread(reload, config_path, app_config, server, worker))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(server.load_failed.wait())
        watched = [stopped, failed]
        if worker is not None:
            watched.append(asyncio.create_task(_worker_stopped(worker)))
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        for task in watched:
            task.cancel()
        if server.load_error is not None:
            what = "the model pool stopped" if server.was_serving else "the model failed to load"
            raise ServeError(f"{what}: {server.load_error}") from server.load_error
        if worker is not None and not worker.running and not stop.is_set():
            # Half a server must not look healthy: NOT_SERVING now, then exit non-zero so that
            # compose / Kubernetes restart the process (which re-reads from the committed offsets).
            for service in ("", SERVICE_NAME):
                await server.health.set(service, NOT_SERVING)
            log.error("the kafka worker stopped: %s; health NOT_SERVING, exiting", worker.error)
            raise ServeError(f"the kafka worker stopped: {worker.error}") from worker.error
        print("gliclass-stream serve: shutting down", file=sys.stderr, flush=True)
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
    return 0


async def _worker_stopped(worker: Any) -> None:
    """Return once the Kafka worker's loop thread has ended (for any reason)."""
    while worker.running:
        await asyncio.sleep(WORKER_POLL_S)


def http_edge_for(app_config: AppConfig, server: GrpcServer) -> Any:
    """The HTTP edge's starter when `[http] address` is set (None otherwise); hooks it into `server`."""
    from server.http.config import parse_http_config

    http_config = parse_http_config(app_config.section("http"))
    if not http_config.enabled:
        return None
    from server.http.embed import attach

    return attach(http_config, server)


def reload(path: str | None, running: AppConfig, server: GrpcServer, worker: Any = None) -> bool:
    """Re-read the config file and apply its label sets (and the worker's routes); True when applied.

    Everything is validated before anything changes: a bad file is logged and the running config
    stays. `[model]`, `[batching]` and `[grpc]` changes take effect only after a restart.
    """
    from server.grpc_config import parse_grpc_config
    from server.reload import reload_config

    def apply(new: AppConfig) -> None:
        parse_grpc_config(new.section("grpc"))  # so the file will also start the next time
        if worker is not None:
            worker.reload(new)  # validates [kafka] before it changes anything; raises when invalid
        server.servicer.set_label_sets(new.label_sets)
        restart_only = [s for s in ("model", "batching", "grpc") if new.raw.get(s) != running.raw.get(s)]
        if restart_only:
            log.warning("reload: [%s] changed; that takes effect after a restart", "], [".join(restart_only))
        log.info("reloaded: %d label sets", len(new.label_sets))

    applied = reload_config(path, apply)
    if applied:
        print("gliclass-stream serve: reloaded label sets", file=sys.stderr, flush=True)
    return applied
