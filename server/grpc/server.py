"""The gRPC server: build the grpc.aio server (servicer, health, reflection, TLS), start, drain, stop.

`GrpcServer` runs on an asyncio loop the caller owns (`server.app.process.serve`, or a test thread).
Health stays NOT_SERVING until the runtime is warm, and turns NOT_SERVING again if its pool stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gliclass_core.service import ClassifyService
from server.grpc.config import GrpcConfig
from server.grpc.errors import ErrorInterceptor
from server.grpc.health import HealthServicer
from server.grpc.reflection import enable_reflection
from server.grpc.servicer import ClassifierServicer
from server.grpc.tls import server_credentials
from server.grpc.tracing import TracingInterceptor
from server.proto import classifier_pb2, classifier_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = classifier_pb2.DESCRIPTOR.services_by_name["Classifier"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
READY_POLL_S = 0.05


class GrpcServer:
    """One grpc.aio server over a runtime: Classifier + Health + reflection (v1, v1alpha) on one port."""

    def __init__(self, runtime: ClassifyService, config: GrpcConfig) -> None:
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
        # Reflection v1 and v1alpha: grpcurl, buf curl and Postman ask for either.
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
        await self.set_not_serving()
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
            error = self.runtime.error
            if error is not None:
                self.load_error = error
                self.load_failed.set()
                return
            await asyncio.sleep(READY_POLL_S)

    async def _watch_pool(self) -> None:
        """While SERVING: if the pool stops (a replica gave up), go NOT_SERVING and report it."""
        while not self._stopping:
            error = self.runtime.error
            if error is not None:
                await self.set_not_serving()
                log.error("model pool stopped: health NOT_SERVING (%s)", error)
                self.load_error, self.was_serving = error, True
                self.load_failed.set()
                return
            await asyncio.sleep(READY_POLL_S)

    async def set_not_serving(self) -> None:
        """Report NOT_SERVING (for the whole server and the Classifier service) while still answering."""
        for service in ("", SERVICE_NAME):
            await self.health.set(service, NOT_SERVING)

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
