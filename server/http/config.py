"""The `[http] section`: where the HTTP edge listens, validated once into frozen data.

```toml
[http]
address = "127.0.0.1:8080"   # absent: no HTTP edge (no /metrics, no JSON API, no console)
console = true               # serve the web console at / (the API and /metrics stay either way)
```
Request limits are the `[grpc]` ones (items, text and label counts, body size = max_message_bytes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gliclass_core.config import ConfigError


@dataclass(frozen=True)
class HttpConfig:
    """Everything the HTTP edge needs from configuration; `address` None means off."""

    address: str | None = None
    console: bool = True

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def host_port(self) -> tuple[str, int]:
        assert self.address is not None
        host, _, port = self.address.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


def parse_http_config(section: Mapping[str, Any]) -> HttpConfig:
    """Validate the raw `[http]` table (from `AppConfig.section("http")`)."""
    table = dict(section)
    unknown = set(table) - {"address", "console"}
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
    return HttpConfig(address=address, console=console)
