"""TLS and mutual TLS from config, with a throwaway CA and certificates made by the test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from fixtures.grpc import ServerThread, TlsFiles

from server.app.cli import main
from server.grpc.config import TlsConfig
from server.grpc.tls import channel_credentials
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc

REQUEST = pb.ClassifyRequest(items=[pb.Item(id="x", text="I was charged twice", labels=["billing", "bug"])])


def classify(address: str, creds: grpc.ChannelCredentials | None) -> Any:
    channel = grpc.secure_channel(address, creds) if creds else grpc.insecure_channel(address)
    with channel:
        return classifier_pb2_grpc.ClassifierStub(channel).Classify(REQUEST, timeout=20)


def failure(address: str, creds: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        classify(address, creds)
    return info.value.code()


@pytest.fixture(scope="module")
def tls_server(grpc_runtime: Any, tls_files: TlsFiles) -> Iterator[ServerThread]:
    server = ServerThread(grpc_runtime, tls=TlsConfig(str(tls_files.server_cert), str(tls_files.server_key)))
    yield server
    server.close()


@pytest.fixture(scope="module")
def mtls_server(grpc_runtime: Any, tls_files: TlsFiles) -> Iterator[ServerThread]:
    tls = TlsConfig(
        str(tls_files.server_cert), str(tls_files.server_key), str(tls_files.ca), require_client_cert=True
    )
    server = ServerThread(grpc_runtime, tls=tls)
    yield server
    server.close()


def test_tls_server_accepts_clients_that_trust_its_ca(tls_server: ServerThread, tls_files: TlsFiles) -> None:
    reply = classify(tls_server.address, channel_credentials(str(tls_files.ca)))
    assert reply.results[0].id == "x" and len(reply.results[0].scores) == 2


def test_tls_server_refuses_plaintext_and_untrusting_clients(tls_server: ServerThread) -> None:
    assert failure(tls_server.address, None) is grpc.StatusCode.UNAVAILABLE
    assert failure(tls_server.address, channel_credentials()) is grpc.StatusCode.UNAVAILABLE  # system roots


def test_mutual_tls_requires_a_client_cert_from_the_configured_ca(
    mtls_server: ServerThread, tls_files: TlsFiles
) -> None:
    ca = str(tls_files.ca)
    good = channel_credentials(ca, str(tls_files.client_cert), str(tls_files.client_key))
    assert classify(mtls_server.address, good).results[0].id == "x"
    assert failure(mtls_server.address, channel_credentials(ca)) is grpc.StatusCode.UNAVAILABLE
    rogue = channel_credentials(ca, str(tls_files.rogue_client_cert), str(tls_files.rogue_client_key))
    assert failure(mtls_server.address, rogue) is grpc.StatusCode.UNAVAILABLE


def test_health_command_speaks_mutual_tls(
    mtls_server: ServerThread, tls_files: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["health", "--address", mtls_server.address, "--ca-file", str(tls_files.ca), "--timeout", "10"]
    client = ["--cert-file", str(tls_files.client_cert), "--key-file", str(tls_files.client_key)]
    assert main([*base, *client]) == 0
    assert "SERVING" in capsys.readouterr().out
    assert main(base) == 1  # no client certificate: refused
    assert main(["health", "--address", mtls_server.address, "--timeout", "10"]) == 1  # plaintext
