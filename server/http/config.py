"""The `[http] section`: where the HTTP edge listens and what it allows, validated once into frozen data.

```toml
[http]
address = "127.0.0.1:8080"   # absent: no HTTP edge (no /metrics, no JSON API, no console)
console = true               # serve the web console at / (the API and /metrics stay either way)
allowed_hosts = []           # Host header names served ("*": any; ".example.com": it and subdomains);
                             # empty: the bound host, localhost and loopback addresses when bound to
                             # loopback, any host otherwise
header_timeout_s = 10.0      # a request's line and headers must arrive within this, or the connection closes
keepalive_timeout_s = 15.0   # an idle keep-alive connection closes after this
max_header_bytes = 8190      # longest request line and header field (431/400 beyond)
max_headers = 64             # most header fields in one request
max_connections = 1000       # open connections; more are answered 503 and closed
max_body_bytes = 0           # largest request body by Content-Length (0: [grpc] max_message_bytes)

[http.tls]                   # absent: plaintext; same keys as [grpc.tls]
cert_file = "server.pem"
key_file = "server.key"
```
Other request limits are the `[grpc]` ones (items, text and label counts).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gliclass_core.config import ConfigError
from server.http.tls import HttpTlsConfig, parse_http_tls

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_POSITIVE_NUMBERS = ("header_timeout_s", "keepalive_timeout_s")
_POSITIVE_INTS = ("max_header_bytes", "max_headers", "max_connections")


@dataclass(frozen=True)
class HttpConfig:
    """Everything the HTTP edge needs from configuration; `address` None means off."""

    address: str | None = None
    console: bool = True
    allowed_hosts: tuple[str, ...] = ()
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 15.0
    max_header_bytes: int = 8190
    max_headers: int = 64
    max_connections: int = 1000
    max_body_bytes: int = 0
    tls: HttpTlsConfig | None = field(default=None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def host_port(self) -> tuple[str, int]:
        assert self.address is not None
        host, _, port = self.address.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)

    @property
    def on_loopback(self) -> bool:
        """True when bound to a loopback address (reachable from this machine only)."""
        return self.enabled and is_loopback(self.host_port[0])

    def host_patterns(self) -> tuple[str, ...]:
        """The Host names served: `allowed_hosts`, or the default for the bound address."""
        if self.allowed_hosts:
            return tuple(h.lower().rstrip(".") if h != "*" else h for h in self.allowed_hosts)
        if not self.on_loopback:
            return ("*",)
        host = self.host_port[0].lower()
        return tuple(dict.fromkeys((host, *LOOPBACK_NAMES)))


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_http_config(section: Mapping[str, Any]) -> HttpConfig:
    """Validate the raw `[http]` table (from `AppConfig.section("http")`)."""
    table = dict(section)
    tls = parse_http_tls(table.pop("tls", None))
    known = {"address", "console", "allowed_hosts", "max_body_bytes", *_POSITIVE_NUMBERS, *_POSITIVE_INTS}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"[http] unknown key(s): {', '.join(sorted(unknown))}")
    address = table.get("address")
    if address is not None:
        _host, sep, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"[http] address must be 'HOST:PORT', got {address!r}")
    console = table.get("console", True)
    if not isinstance(console, bool):
        raise ConfigError("[http] console must be true or false")
    hosts = table.get("allowed_hosts", [])
    if isinstance(hosts, str):  # GLICLASS_HTTP__ALLOWED_HOSTS=a,b
        hosts = [h for h in hosts.replace(",", " ").split() if h]
    if not isinstance(hosts, list | tuple) or not all(isinstance(h, str) and h for h in hosts):
        raise ConfigError("[http] allowed_hosts must be a list of host names")
    limits: dict[str, Any] = {}
    for key in _POSITIVE_NUMBERS:
        value = table.get(key, getattr(HttpConfig, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"[http] {key} must be a number > 0")
        limits[key] = float(value)
    for key in _POSITIVE_INTS:
        value = table.get(key, getattr(HttpConfig, key))
        if type(value) is not int or value < 1:
            raise ConfigError(f"[http] {key} must be a positive integer")
        limits[key] = value
    body = table.get("max_body_bytes", 0)
    if type(body) is not int or body < 0:
        raise ConfigError("[http] max_body_bytes must be an integer >= 0")
    return HttpConfig(
        address=address,
        console=console,
        allowed_hosts=tuple(hosts),
        max_body_bytes=body,
        tls=tls,
        **limits,
    )
