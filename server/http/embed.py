"""Wire the HTTP edge into `serve`: count gRPC items per edge, then start on the gRPC server's loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gliclass_core.auth import KeyStore
from server.http.config import HttpConfig
from server.http.live import EdgeCounters, ItemCountInterceptor
from server.http.server import HttpServer


def attach(
    config: HttpConfig, grpc_server: Any, keys: KeyStore | None = None
) -> Callable[[Callable[[], Any], Any], Awaitable[HttpServer]]:
    """Add the item counter to `grpc_server` (call before it starts); return the HTTP edge's starter.

    `keys`: the API keys both edges check (None: open).
    """
    counters = EdgeCounters()
    grpc_server.interceptors.append(ItemCountInterceptor(counters))

    async def start(worker: Callable[[], Any], registry: Any) -> HttpServer:
        http = HttpServer(
            config,
            grpc_server.runtime,
            servicer=grpc_server.servicer,
            grpc_config=grpc_server.config,
            registry=registry,
            counters=counters,
            worker=worker,
            keys=keys,
        )
        port = await http.start()
        print(f"gliclass-stream serve: HTTP on {url(config, port)}", flush=True)
        return http

    return start


def url(config: HttpConfig, port: int) -> str:
    """The address a person types: 0.0.0.0 / :: are reached as localhost."""
    host, _ = config.host_port
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.tls is not None else "http"
    return f"{scheme}://{host}:{port}/"
