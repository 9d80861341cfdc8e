"""Wire the HTTP edge into `serve`: count gRPC items per edge, then start on the gRPC server's loop.

The composition owns this wiring, so neither edge imports the other: the item counter is a gRPC
interceptor that feeds the HTTP console's `EdgeCounters`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gliclass_core.auth import KeyStore
from server.grpc.interceptors import CLASSIFIER_METHODS, Around, CallInterceptor
from server.http.config import HttpConfig
from server.http.live import EdgeCounters
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


class ItemCountInterceptor(CallInterceptor):
    """Count the items of every Classifier call (unary and stream) into `EdgeCounters` as "grpc"."""

    def __init__(self, counters: EdgeCounters) -> None:
        self.counters = counters

    def around_call(self, method: str, metadata: Any) -> Around | None:
        return self._counted if method.startswith(CLASSIFIER_METHODS) else None

    @contextlib.asynccontextmanager
    async def _counted(self, request: Any, context: Any) -> AsyncIterator[Any]:
        if hasattr(request, "__aiter__"):
            yield self._count_stream(request)
        else:
            self.counters.add("grpc", _items_in(request))
            yield request

    async def _count_stream(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            self.counters.add("grpc", _items_in(request))
            yield request


def _items_in(request: Any) -> int:
    """Items a request message carries: its `items`, or 1 for a session message (one chunk)."""
    if hasattr(request, "items"):
        return len(request.items)
    return 1 if hasattr(request, "session_id") else 0
