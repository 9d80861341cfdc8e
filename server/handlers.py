"""Rewrap a gRPC method handler's behaviour, whatever its shape (shared by our interceptors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]

# handler attribute -> factory building a handler of the same shape
_SHAPES = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, "unary"),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, "stream"),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, "unary"),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, "stream"),
)


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
