"""The HTTP edge's lifecycle: an aiohttp server on the caller's event loop, beside the gRPC server.

aiohttp because it is an asyncio-native, long-maintained server that starts inside a loop we
already run (`AppRunner` + `TCPSite`: no second loop, no thread, no process), streams request
bodies and responses with backpressure (NDJSON), and needs no ASGI server on top.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gliclass_core.auth import KeyStore
from gliclass_core.service import ClassifyService, RequestLimits
from gliclass_core.telemetry.metrics import SECONDS_BUCKETS
from server.http.api import Api, json_body
from server.http.config import HttpConfig
from server.http.connections import GuardedSite, error_response
from server.http.docs import docs_routes
from server.http.errors import error_body
from server.http.guard import Guard, json_errors
from server.http.live import EdgeCounters, LiveStats, console_page, history_query
from server.http.openapi import build_openapi
from server.http.sessions import SessionApi

log = logging.getLogger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
#: Paths refused with 503 while draining (probes, metrics and the console keep answering).
DRAINED_PREFIX = ("/v1/classify", "/v1/sessions")


class HttpServer:
    """`/metrics`, `/healthz`, `/readyz`, `/openapi.json`, `/v1/...` and the console on one address.

    `servicer` is the gRPC `ClassifierServicer` (None: no classify API, as in `worker`);
    `registry` the Prometheus registry the telemetry's Prometheus reader fills (None: no /metrics);
    `keys` the API keys every route but the probes needs (None or empty: open). Connection limits,
    TLS and the Host, key, Content-Type and size checks come from `config` (see `server.http.guard`).
    """

    def __init__(
        self,
        config: HttpConfig,
        runtime: ClassifyService,
        *,
        servicer: Any = None,
        grpc_config: Any = None,
        registry: Any = None,
        counters: EdgeCounters | None = None,
        worker: Callable[[], Any] | None = None,
        keys: KeyStore | None = None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.servicer = servicer
        self.registry = registry
        self.counters = counters or EdgeCounters()
        self.live = LiveStats(runtime, self.counters, registry, worker)
        self.draining = False
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._duration: Any = None
        from gliclass_core import telemetry

        instruments = telemetry.instruments()
        if instruments is not None:
            self._duration = instruments.meter.create_histogram(
                "http.server.request.duration",
                unit="s",
                description="Duration of HTTP requests to the JSON API, by route and status",
                explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
            )
        self.shutdown_grace_s = grpc_config.shutdown_grace_s if grpc_config is not None else 5.0
        max_body = config.max_body_bytes or (
            grpc_config.max_message_bytes if grpc_config is not None else 1024 * 1024
        )
        self.keys = keys or KeyStore()
        self.guard = Guard(config.host_patterns(), self.keys, max_body)
        self.site: GuardedSite | None = None
        # Outermost first: the status recorded is the one sent, after the guard and the error shape.
        self.app = web.Application(
            client_max_size=max_body, middlewares=[self._observed, self.guard.middleware, self._draining]
        )
        self.app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics),
                web.get("/openapi.json", self.openapi),
                web.get("/v1/stats", self.stats),
                *docs_routes(),  # /docs: Swagger UI over /openapi.json, from the package (offline)
            ]
        )
        if servicer is not None:
            self.api = Api(
                runtime,
                RequestLimits(
                    grpc_config.max_items_per_request,
                    grpc_config.max_text_chars,
                    grpc_config.max_labels_per_item,
                ),
                max_body,
                grpc_config.stream_max_in_flight,
                lambda n: self.counters.add("http", n),
                info_limits=grpc_config,
            )
            self.app.add_routes(self.api.routes())
            self.sessions = SessionApi(
                runtime, self.api.limits, max_body, grpc_config.stream_max_in_flight, self.api.on_items
            )
            self.app.add_routes(self.sessions.routes())
        if config.console:
            self.app.add_routes([web.get("/", self.console)])
        self._openapi = build_openapi(with_classify=servicer is not None)

    async def start(self) -> int:
        """Bind and serve on the running loop; return the port (the real one for port 0)."""
        config = self.config
        host, port = config.host_port
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=self.shutdown_grace_s
        )
        await self._runner.setup()
        self.site = GuardedSite(
            self._runner,
            host,
            port,
            handler_options={
                "access_log": None,
                "keepalive_timeout": config.keepalive_timeout_s,
                "max_line_size": config.max_header_bytes,
                "max_field_size": config.max_header_bytes,
                "max_headers": config.max_headers,
            },
            header_timeout=config.header_timeout_s,
            max_connections=config.max_connections,
            ssl_context=config.tls.ssl_context() if config.tls is not None else None,
        )
        await self.site.start()
        self.port = self.site.port
        self.live.start()  # the console's history is kept whether or not anyone watches
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Refuse new classify calls (503), let those in flight finish within `grace`, close."""
        self.draining = True
        self.live.stop()
        if self._runner is not None:
            # Calls still running get `grace` (aiohttp's own TCPSite sets this field the same way).
            self._runner._shutdown_timeout = grace
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _draining(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.draining and request.path.startswith(DRAINED_PREFIX):
            return error_response(503, "the server is shutting down")
        return await handler(request)

    @web.middleware
    async def _observed(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Give HTTP errors the `{"error": ...}` shape; record the JSON API's calls by the status sent."""
        if self._duration is None or not request.path.startswith("/v1/"):
            return await json_errors(request, handler)
        started = time.perf_counter()
        status = 500  # an exception escaping here is answered 500 by aiohttp
        try:
            response = await json_errors(request, handler)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = 499  # the client went away; nothing was sent
            raise
        finally:
            route = request.match_info.route.resource
            self._duration.record(
                time.perf_counter() - started,
                {
                    "http.request.method": request.method,
                    "http.route": route.canonical if route is not None else "",
                    "http.response.status_code": status,
                },
            )

    def ready(self) -> bool:
        return not self.draining and bool(self.runtime.ready)

    async def healthz(self, request: web.Request) -> web.Response:
        """Alive: the process answers (the model may still be loading)."""
        return json_body({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready: the model pool is warm and the server is not draining."""
        if self.ready():
            return json_body({"status": "SERVING"})
        reason = "draining" if self.draining else "loading"
        if self.runtime.error is not None:
            reason = "failed"
        return json_body({"status": "NOT_SERVING", "reason": reason}, status=503)

    async def metrics(self, request: web.Request) -> web.Response:
        if self.registry is None:
            return error_response(404, "metrics are off")
        from prometheus_client import generate_latest

        # Collection runs the OTel callbacks (scheduler stats, lag); cheap, but off the loop anyway.
        body = await asyncio.to_thread(generate_latest, self.registry)
        return web.Response(body=body, headers={"Content-Type": PROMETHEUS_TEXT})

    async def openapi(self, request: web.Request) -> web.Response:
        return json_body(self._openapi)

    async def stats(self, request: web.Request) -> web.Response:
        try:
            window, since = history_query(request.query)
        except ValueError as exc:
            status, error = error_body(exc)
            return json_body(error, status=status)
        body = await asyncio.to_thread(self.live.to_json, window, since)
        body["ready"] = self.ready()
        body["classify_api"] = self.servicer is not None
        return json_body(body)

    async def console(self, request: web.Request) -> web.Response:
        return web.Response(body=console_page(), content_type="text/html", charset="utf-8")
