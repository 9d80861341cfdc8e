"""The HTTP edge: Prometheus `/metrics`, the JSON API beside gRPC, the OpenAPI document, the web console.

Runs on the same asyncio loop as the gRPC server and calls the same `ClassifierServicer` over the
same scheduler, so both transports share one model pool, one set of limits and one error table.
Off unless `[http] address` is set (`dev` turns it on).
"""
