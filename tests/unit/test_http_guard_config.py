"""`[http]` limits, `[http.tls]` and the Host check's parsing and matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gliclass_core.config import ConfigError
from server.http.config import HttpConfig, parse_http_config
from server.http.guard import host_allowed, host_name


def test_limits_have_safe_defaults_and_are_configurable() -> None:
    default = parse_http_config({"address": "127.0.0.1:8080"})
    assert default.header_timeout_s == 10.0 and default.keepalive_timeout_s == 15.0
    assert default.max_connections == 1000 and default.max_header_bytes == 8190 and default.tls is None
    tuned = parse_http_config({"address": "127.0.0.1:0", "header_timeout_s": 2, "max_connections": 5})
    assert tuned.header_timeout_s == 2.0 and tuned.max_connections == 5
    for bad in (
        {"header_timeout_s": 0},
        {"max_connections": 0},
        {"max_headers": True},
        {"max_body_bytes": -1},
    ):
        with pytest.raises(ConfigError, match=r"\[http\]"):
            parse_http_config(bad)


def test_tls_takes_the_grpc_keys() -> None:
    tls = {"cert_file": "s.pem", "key_file": "s.key", "client_ca_file": "ca.pem", "require_client_cert": True}
    assert parse_http_config({"tls": tls}).tls is not None
    for bad in ({"cert_file": "s.pem"}, {**tls, "client_ca_file": None}, {**tls, "extra": 1}):
        bad = {k: v for k, v in bad.items() if v is not None}
        with pytest.raises(ConfigError, match=r"\[http\.tls\]"):
            parse_http_config({"tls": bad})
    with pytest.raises(ConfigError, match="cert_file"):
        parse_http_config({"tls": {"cert_file": "/nonexistent.pem", "key_file": "/x"}}).tls.ssl_context()  # type: ignore[union-attr]


def test_default_hosts_are_strict_on_loopback_and_open_elsewhere() -> None:
    loopback = HttpConfig(address="127.0.0.1:8080").host_patterns()
    assert set(loopback) == {"127.0.0.1", "localhost", "::1"}
    assert HttpConfig(address="0.0.0.0:8080").host_patterns() == ("*",)
    assert HttpConfig(address="0.0.0.0:8080", allowed_hosts=("Api.Example.com.",)).host_patterns() == (
        "api.example.com",
    )
    assert parse_http_config({"allowed_hosts": "a.example, b.example"}).allowed_hosts == (
        "a.example",
        "b.example",
    )


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("localhost:8080", True),
        ("LOCALHOST.", True),
        ("127.0.0.1", True),
        ("[::1]:8080", True),
        ("evil.example:8080", False),
        ("localhost.evil.example", False),
        ("", False),
        (None, False),
        ("[::1", False),
    ],
)
def test_host_check_on_loopback(header: str | None, allowed: bool) -> None:
    assert host_allowed(host_name(header), ("127.0.0.1", "localhost", "::1")) is allowed


def test_subdomain_patterns() -> None:
    assert host_allowed("api.example.com", (".example.com",)) and host_allowed(
        "example.com", (".example.com",)
    )
    assert not host_allowed("badexample.com", (".example.com",))


@given(st.one_of(st.none(), st.text(max_size=200)))
def test_any_host_header_is_a_name_or_none(header: str | None) -> None:
    name = host_name(header)
    assert name is None or (name == name.lower() and not name.endswith("."))
    host_allowed(name, ("localhost", ".example.com"))
