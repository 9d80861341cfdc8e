"""TLS for the HTTP edge (`[http.tls]`): the same keys as `[grpc.tls]`, so one set of files serves both.

```toml
[http.tls]
cert_file = "server.pem"
key_file = "server.key"
client_ca_file = "ca.pem"        # CA that signs client certificates (mutual TLS)
require_client_cert = false      # true: clients without a certificate from client_ca_file are refused
```
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gliclass_core.config import ConfigError

KEYS = ("cert_file", "key_file", "client_ca_file", "require_client_cert")


@dataclass(frozen=True)
class HttpTlsConfig:
    """Server certificate and key, and the CA that client certificates must chain to (mTLS)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    require_client_cert: bool = False

    def ssl_context(self) -> ssl.SSLContext:
        """A server context (TLS 1.2 or later); ConfigError naming the file that cannot be used."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[http.tls] cannot load cert_file/key_file: {_why(exc)}") from None
        if self.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"[http.tls] client_ca_file: {_why(exc)}") from None
            context.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        return context


def _why(exc: OSError | ssl.SSLError) -> str:
    filename = getattr(exc, "filename", None)
    reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
    return f"{filename}: {reason}" if filename else str(reason)


def parse_http_tls(table: Any) -> HttpTlsConfig | None:
    """Validate the raw `[http.tls]` table (None: plaintext)."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigError("[http.tls] must be a table")
    unknown = set(table) - set(KEYS)
    if unknown:
        raise ConfigError(f"[http.tls] unknown key(s): {', '.join(sorted(unknown))}")
    for key in ("cert_file", "key_file"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise ConfigError(f"[http.tls] {key} is required (a PEM file path)")
    ca = table.get("client_ca_file")
    if ca is not None and (not isinstance(ca, str) or not ca):
        raise ConfigError("[http.tls] client_ca_file must be a PEM file path")
    require = table.get("require_client_cert", False)
    if not isinstance(require, bool):
        raise ConfigError("[http.tls] require_client_cert must be true or false")
    if require and ca is None:
        raise ConfigError("[http.tls] require_client_cert = true needs client_ca_file")
    return HttpTlsConfig(table["cert_file"], table["key_file"], ca, require)
