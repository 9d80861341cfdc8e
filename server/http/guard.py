"""What every HTTP request passes before a route: Host, API key, Content-Type and body-size checks.

In this order, each answering in the API's `{"error": ...}` shape:

- **Host** (421 Misdirected Request): the Host header must name a host in `[http] allowed_hosts`
  (by default the bound host, `localhost` and loopback addresses when bound to loopback), so a web
  page whose DNS name was rebound to 127.0.0.1 cannot drive a local server.
- **API key** (401, `WWW-Authenticate: Bearer`): with `[auth]` keys, every route needs
  `Authorization: Bearer <key>` except `/healthz`, `/readyz`, the console's page shell at `/`
  (static HTML holding no data; it asks for a key and sends it on every call it makes) and, with
  `[auth] public_metrics = true`, `/metrics`.
- **Content-Type** (415): a POST body must be `application/json` or `application/x-ndjson`; a
  form or `text/plain` post (which any web page can send without a CORS preflight) is refused.
- **Body size** (413): a Content-Length over the limit is refused before any of the body is read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gliclass_core.auth import ANONYMOUS, KeyStore, current_caller
from server.http.connections import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY_TYPES = frozenset({"application/json", "application/x-ndjson"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Routes (canonical path) anyone may GET whatever the keys: probes and the console's page shell.
OPEN_ROUTES = frozenset({"/healthz", "/readyz", "/"})
METRICS_ROUTE = "/metrics"
#: Where the handlers find the caller (`gliclass_core.auth.Caller`) of a request.
CALLER = "gliclass.caller"
REALM = 'Bearer realm="gliclass-stream"'


def host_name(header: str | None) -> str | None:
    """The host of a Host header value, lower-cased, without port or trailing dot (None: unusable)."""
    if header is None:
        return None
    value = header.strip().lower()
    if value.startswith("["):  # an IPv6 literal: [::1]:8080
        literal, bracket, _rest = value[1:].partition("]")
        return literal if bracket and literal else None
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit():
        value = name
    value = value.rstrip(".")
    return value or None


def host_allowed(name: str | None, patterns: tuple[str, ...]) -> bool:
    """True when `name` matches a pattern: '*' any, '.example.com' it and its subdomains, else exact."""
    if "*" in patterns:
        return True
    if name is None:
        return False
    for pattern in patterns:
        if pattern.startswith("."):
            if name == pattern[1:] or name.endswith(pattern):
                return True
        elif name == pattern:
            return True
    return False


class Guard:
    """The checks of this module as one aiohttp middleware."""

    def __init__(self, host_patterns: tuple[str, ...], keys: KeyStore, max_body_bytes: int) -> None:
        self.host_patterns = host_patterns
        self.keys = keys
        self.max_body_bytes = max_body_bytes

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = self.refusal(request)
        if refusal is not None:
            return refusal
        caller = self._caller(request)
        if caller is None:
            scheme = REALM if "Authorization" not in request.headers else f'{REALM}, error="invalid_token"'
            return error_response(
                401,
                "missing or unknown API key: send the header 'Authorization: Bearer <key>'",
                field="Authorization",
                headers={"WWW-Authenticate": scheme},
            )
        request[CALLER] = caller
        token = current_caller.set(caller)
        try:
            return await handler(request)
        finally:
            current_caller.reset(token)

    def refusal(self, request: web.Request) -> web.Response | None:
        """The 421 / 415 / 413 answer for a request that must not reach a route (None: it may)."""
        if not host_allowed(host_name(request.headers.get("Host")), self.host_patterns):
            return error_response(421, "this server does not serve that Host", field="Host")
        if request.method not in BODY_METHODS or getattr(request.match_info, "http_exception", None):
            return None  # no body wanted here (a 404 or 405 from the router tells the client more)
        if request.content_type not in BODY_TYPES:
            return error_response(
                415,
                "the body must be application/json or application/x-ndjson",
                field="Content-Type",
            )
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            response = error_response(
                413, f"the body is {length} bytes; the limit is {self.max_body_bytes}", field="body"
            )
            response.force_close()  # do not read (or drain) what the client insists on sending
            return response
        return None

    def _caller(self, request: web.Request) -> Any:
        if not self.keys.enabled:
            return ANONYMOUS
        route = request.match_info.route.resource
        canonical = route.canonical if route is not None else None
        if request.method in ("GET", "HEAD") and (
            canonical in OPEN_ROUTES or (canonical == METRICS_ROUTE and self.keys.public_metrics)
        ):
            return ANONYMOUS
        return self.keys.verify_authorization(request.headers.get("Authorization"))


async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run `handler`; an aiohttp HTTP error it raises (404, 405, 413...) becomes an `{"error": ...}` body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        message = exc.reason
        if exc.status == 413:
            message = "the body is larger than the limit"
        response = error_response(exc.status, message, headers=headers)
        if exc.status == 413:
            response.force_close()
        return response
