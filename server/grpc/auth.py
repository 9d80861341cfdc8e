"""API keys on the gRPC edge: `authorization: Bearer <key>` metadata on every call but health checks.

With keys configured (`[auth]`, see `gliclass_core.auth`), a call without a known key ends with
UNAUTHENTICATED before its handler runs (its request is never read). `grpc.health.v1.Health` stays
open, so load balancers and Kubernetes probes need no key; server reflection needs one, as the
Classifier service does (`grpcurl -H 'authorization: Bearer ...'` sends it for reflection too).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc

from gliclass_core.auth import Caller, KeyStore, current_caller
from server.grpc.interceptors import rewrap, wrap_handler

#: Methods anyone may call: the standard health service.
OPEN_PREFIX = "/grpc.health.v1.Health/"
REFUSED = "missing or unknown API key: send metadata 'authorization: Bearer <key>'"


def metadata_value(metadata: Iterable[tuple[str, Any]] | None, name: str = "authorization") -> str | None:
    """The first text value of `name` in gRPC invocation metadata (None: absent or binary)."""
    for key, value in metadata or ():
        if key.lower() == name:
            return value if isinstance(value, str) else None
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuse calls without a known API key (UNAUTHENTICATED); pass the caller to the handler."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not self.keys.enabled:
            return handler
        if handler_call_details.method.startswith(OPEN_PREFIX):
            return handler
        header = metadata_value(handler_call_details.invocation_metadata)
        caller = self.keys.verify_authorization(header)
        if caller is None:
            return rewrap(handler, lambda _behavior: _refuse, lambda _behavior: _refuse_stream)
        return wrap_handler(handler, _as(caller))


def _as(caller: Caller) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
    """An `Around` that makes `caller` the call's `current_caller` while it runs."""

    @contextlib.asynccontextmanager
    async def around(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        token = current_caller.set(caller)
        try:
            yield request
        finally:
            with contextlib.suppress(ValueError):  # a stream resumed in another context
                current_caller.reset(token)

    return around


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)


async def _refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)
    yield  # pragma: no cover  (makes this an async generator, as stream handlers are)
