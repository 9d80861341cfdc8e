"""TLS credentials for the server (from `[grpc.tls]`) and for clients such as `gliclass-stream health`."""

from __future__ import annotations

from pathlib import Path

import grpc

from gliclass_core.config import ConfigError
from server.grpc.config import TlsConfig


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """Server TLS; with `require_client_cert`, clients must present a cert signed by `client_ca_file`."""
    cert, key, ca = tls.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=tls.require_client_cert
    )


def channel_credentials(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """Client TLS: trust `ca_file` (else the system roots); present `cert_file`/`key_file` for mTLS."""
    if (cert_file is None) != (key_file is None):
        raise ConfigError("client TLS needs both a certificate and a key file, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "CA file"),
        private_key=_read(key_file, "key file"),
        certificate_chain=_read(cert_file, "certificate file"),
    )


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}") from exc
