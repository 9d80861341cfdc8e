"""The skeleton every server interceptor of ours shares: pick the calls, run something around each.

`CallInterceptor.around_call` says, per method, what runs around each of its calls (None: leave
the method alone); `wrap_handler` wraps a handler of any shape with it, so the error mapping, the
tracing and the HTTP edge's item counter each write only what they do around a call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

#: Method names of the `gliclass.v1.Classifier` service start with this.
CLASSIFIER_METHODS = "/gliclass.v1.Classifier/"

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]
#: Called with (request or request iterator, context) at the start of a call; the context manager
#: is entered around the whole call (a stream's too, until its last response) and yields the
#: request (or request iterator) the handler gets. An error in the call reaches its `__aexit__`,
#: which must not swallow it (re-raise it, or end the call with `context.abort`).
Around = Callable[[Any, grpc.aio.ServicerContext], AbstractAsyncContextManager[Any]]

# handler attribute -> factory building a handler of the same shape
_SHAPES = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, "unary"),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, "stream"),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, "unary"),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, "stream"),
)


class CallInterceptor(grpc.aio.ServerInterceptor):
    """A grpc.aio interceptor that runs `around_call(method)` around each call of a method."""

    def around_call(self, method: str, metadata: Any) -> Around | None:
        """What runs around each call of `method` (None: the method is left alone)."""
        raise NotImplementedError

    def wrap_deserializer(self, method: str) -> Wrap | None:
        """A wrapper for the method's request deserializer (None: keep it)."""
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        around = self.around_call(method, handler_call_details.invocation_metadata)
        if around is None:
            return handler
        return wrap_handler(handler, around, self.wrap_deserializer(method))


def wrap_handler(
    handler: grpc.RpcMethodHandler, around: Around, wrap_deserializer: Wrap | None = None
) -> grpc.RpcMethodHandler:
    """Return `handler` with `around(request, context)` entered around each of its calls."""

    def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(request, context) as request:
                return await behavior(request, context)

        return call

    def stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with around(request, context) as request:
                async for response in behavior(request, context):
                    yield response

        return call

    return rewrap(handler, unary, stream, wrap_deserializer)


def rewrap(
    handler: grpc.RpcMethodHandler,
    wrap_unary: Wrap,
    wrap_stream: Wrap,
    wrap_deserializer: Wrap | None = None,
) -> grpc.RpcMethodHandler:
    """Return `handler` with its behaviour wrapped: `wrap_unary` where it returns one response,
    `wrap_stream` where it yields responses (and its request deserializer by `wrap_deserializer`)."""
    for attr, factory, returns in _SHAPES:
        behavior = getattr(handler, attr)
        if behavior is not None:
            wrap = wrap_unary if returns == "unary" else wrap_stream
            deserializer = handler.request_deserializer
            if wrap_deserializer is not None and deserializer is not None:
                deserializer = wrap_deserializer(deserializer)
            return factory(
                wrap(behavior),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler
