"""The `[grpc]` config section: address, TLS and request limits, validated once into frozen data.

```toml
[grpc]
address = "0.0.0.0:50051"
max_message_bytes = 4194304      # largest request/response message
max_items_per_request = 256      # items in one Classify / ClassifyStream message
max_text_chars = 20000           # characters in one Item.text
max_labels_per_item = 256        # labels on one item
stream_max_in_flight = 128       # unanswered items per stream before the server stops reading
shutdown_grace_s = 10.0          # SIGTERM: time in-flight calls get to finish
max_concurrent_streams = 0       # HTTP/2 streams per connection (0: gRPC default)

[grpc.tls]                       # absent: plaintext
cert_file = "server.pem"
key_file = "server.key"
client_ca_file = "ca.pem"        # CA that signs client certificates (mutual TLS)
require_client_cert = false      # true: mutual TLS, clients must present a cert signed by client_ca_file
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gliclass_core.config import ConfigError


@dataclass(frozen=True)
class TlsConfig:
    """Server certificate and key, and the CA that client certificates must chain to (mTLS)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    require_client_cert: bool = False

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """Read the PEM files; ConfigError naming the key whose file cannot be read."""
        out: list[bytes | None] = []
        for key in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, key)
            if path is None:
                out.append(None)
                continue
            try:
                out.append(Path(path).read_bytes())
            except OSError as exc:
                raise ConfigError(f"[grpc.tls] {key}: cannot read {path}: {exc.strerror}") from exc
        cert, private_key, ca = out
        assert cert is not None and private_key is not None
        return cert, private_key, ca


@dataclass(frozen=True)
class GrpcConfig:
    """Everything the gRPC edge needs from configuration."""

    address: str = "0.0.0.0:50051"
    max_message_bytes: int = 4 * 1024 * 1024
    max_items_per_request: int = 256
    max_text_chars: int = 20_000
    max_labels_per_item: int = 256
    stream_max_in_flight: int = 128
    shutdown_grace_s: float = 10.0
    max_concurrent_streams: int = 0
    tls: TlsConfig | None = None


_POSITIVE_INTS = (
    "max_message_bytes",
    "max_items_per_request",
    "max_text_chars",
    "max_labels_per_item",
    "stream_max_in_flight",
)


def parse_grpc_config(section: Mapping[str, Any]) -> GrpcConfig:
    """Validate the raw `[grpc]` table (from `AppConfig.section("grpc")`)."""
    table = dict(section)
    tls_table = table.pop("tls", None)
    known = {f.name for f in fields(GrpcConfig)} - {"tls"}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"[grpc] unknown key(s): {', '.join(sorted(unknown))}")
    for key in _POSITIVE_INTS:
        if key in table and (type(table[key]) is not int or table[key] < 1):
            raise ConfigError(f"[grpc] {key} must be a positive integer")
    if "max_concurrent_streams" in table and (
        type(table["max_concurrent_streams"]) is not int or table["max_concurrent_streams"] < 0
    ):
        raise ConfigError("[grpc] max_concurrent_streams must be an integer >= 0")
    grace = table.get("shutdown_grace_s", 10.0)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
        raise ConfigError("[grpc] shutdown_grace_s must be a number >= 0")
    table["shutdown_grace_s"] = float(grace)
    address = table.get("address", GrpcConfig.address)
    if not isinstance(address, str) or ":" not in address:
        raise ConfigError(f"[grpc] address must be 'HOST:PORT', got {address!r}")
    return GrpcConfig(**table, tls=_parse_tls(tls_table))


def _parse_tls(table: Any) -> TlsConfig | None:
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigError("[grpc.tls] must be a table")
    known = {f.name for f in fields(TlsConfig)}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"[grpc.tls] unknown key(s): {', '.join(sorted(unknown))}")
    for key in ("cert_file", "key_file"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise ConfigError(f"[grpc.tls] {key} is required (a PEM file path)")
    ca = table.get("client_ca_file")
    if ca is not None and (not isinstance(ca, str) or not ca):
        raise ConfigError("[grpc.tls] client_ca_file must be a PEM file path")
    require = table.get("require_client_cert", False)
    if not isinstance(require, bool):
        raise ConfigError("[grpc.tls] require_client_cert must be true or false")
    if require and ca is None:
        raise ConfigError("[grpc.tls] require_client_cert = true needs client_ca_file")
    return TlsConfig(
        cert_file=table["cert_file"],
        key_file=table["key_file"],
        client_ca_file=ca,
        require_client_cert=require,
    )
