"""A real `gliclass-stream serve` with API keys on both edges, connection limits and browser checks.

One serve process (builtin model, CPU) for the module, its output captured to a file that the last
test searches for the keys. Raw sockets where the test needs bytes no HTTP client would send.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc

FILE_KEY = "file-key-7c1d93aa0b5e4f21"
ENV_KEY = "env-key-5f0e2b8c91d3a7e6"
NEW_KEY = "new-key-0a9b8c7d6e5f4a3b"
HEADER_TIMEOUT_S = 3
MAX_CONNECTIONS = 40
CONFIG = """
[model]
id = "builtin:minilm"
device = "cpu"

[label_sets.support]
labels = ["billing", "bug report", "feature request"]

[grpc]
address = "127.0.0.1:0"
max_message_bytes = 65536

[http]
address = "127.0.0.1:0"
header_timeout_s = {header_timeout}
keepalive_timeout_s = {header_timeout}
max_connections = {max_connections}

[auth]
api_keys_file = "{keys}"
"""
ITEM = {"id": "a", "text": "I was charged twice this month", "labels": ["billing", "bug report"]}
BODY = json.dumps({"items": [ITEM]}).encode()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "server.app.cli", *args]


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    log: Path
    keys: Path
    grpc_address: str
    http_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(served: Served, pattern: str, timeout: float = 180) -> re.Match[str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        match = re.search(pattern, served.text())
        if match:
            return match
        assert served.proc.poll() is None, served.text()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"serve never logged {pattern!r}: {served.text()[-3000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("guard")
    keys = directory / "keys"
    keys.write_text(f"# one key per line\n{FILE_KEY}\n")
    config = directory / "gliclass.toml"
    config.write_text(
        CONFIG.format(keys=keys, header_timeout=HEADER_TIMEOUT_S, max_connections=MAX_CONNECTIONS)
    )
    log = directory / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLICLASS_")}
    env.update(PYTHONUNBUFFERED="1", GLICLASS_AUTH__API_KEYS=ENV_KEY)
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cli("serve", "--config", str(config)), stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    served = Served(proc, log, keys, "", 0)
    try:
        served.grpc_address = wait_for(served, r"listening on (\S+)").group(1)
        served.http_port = int(wait_for(served, r"HTTP on http://127\.0\.0\.1:(\d+)/").group(1))
        end = time.monotonic() + 180
        while requests.get(served.url + "/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < end and proc.poll() is None, served.text()[-3000:]
            time.sleep(0.5)
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(served: Served, path: str, body: bytes = BODY, **headers: str) -> requests.Response:
    headers = {"Content-Type": "application/json", **headers}
    return requests.post(served.url + path, data=body, headers=headers, timeout=60)


def raw(port: int, request: bytes, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send `request` bytes, read to EOF; return the status, headers (lower-case names) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def classify_grpc(served: Served, key: str | None, stream: bool = False) -> grpc.StatusCode:
    metadata = [("authorization", f"Bearer {key}")] if key else []
    request = pb.ClassifyRequest(items=[pb.Item(id="a", text=ITEM["text"], labels=ITEM["labels"])])
    with grpc.insecure_channel(served.grpc_address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        try:
            if stream:
                message = pb.ClassifyStreamRequest(items=request.items)
                list(stub.ClassifyStream(iter([message]), metadata=metadata, timeout=60))
            else:
                stub.Classify(request, metadata=metadata, timeout=60)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_grpc_needs_a_key_but_health_stays_open(served: Served) -> None:
    for stream in (False, True):
        assert classify_grpc(served, None, stream) is grpc.StatusCode.UNAUTHENTICATED
        assert classify_grpc(served, "wrong-key-0123456789abc", stream) is grpc.StatusCode.UNAUTHENTICATED
        assert classify_grpc(served, ENV_KEY, stream) is grpc.StatusCode.OK
        assert classify_grpc(served, FILE_KEY, stream) is grpc.StatusCode.OK
    with grpc.insecure_channel(served.grpc_address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as refused:
            list(reflection.ServerReflectionInfo(iter([ask]), timeout=10))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        metadata = [("authorization", f"Bearer {ENV_KEY}")]
        answers = list(reflection.ServerReflectionInfo(iter([ask]), metadata=metadata, timeout=10))
        names = {service.name for service in answers[0].list_services_response.service}
        assert "gliclass.v1.Classifier" in names


def test_http_needs_a_key_except_probes_and_the_page_shell(served: Served) -> None:
    for path in ("/healthz", "/readyz", "/"):
        assert requests.get(served.url + path, timeout=10).status_code == 200, path
    for path in ("/v1/model", "/v1/label-sets", "/v1/stats", "/openapi.json", "/metrics"):
        refused = requests.get(served.url + path, timeout=10)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer"), path
        assert refused.json()["error"]["status"] == "UNAUTHENTICATED"
        assert requests.get(served.url + path, headers=bearer(ENV_KEY), timeout=10).status_code == 200, path
    wrong = post(served, "/v1/classify", **bearer("wrong-key-0123456789abc"))
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    good = post(served, "/v1/classify", **bearer(FILE_KEY))
    assert good.status_code == 200 and good.json()["results"][0]["id"] == "a"


def test_posts_need_a_json_content_type(served: Served) -> None:
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""):
        response = post(served, "/v1/classify", **bearer(ENV_KEY), **{"Content-Type": kind})
        assert response.status_code == 415, kind
        assert response.json()["error"]["field"] == "Content-Type"
    stream = post(
        served,
        "/v1/classify/stream",
        BODY + b"\n",
        **bearer(ENV_KEY),
        **{"Content-Type": "application/x-ndjson"},
    )
    assert stream.status_code == 200 and json.loads(stream.text.splitlines()[0])["result"]["id"] == "a"


def test_a_foreign_host_is_refused(served: Served) -> None:
    auth = f"Authorization: Bearer {ENV_KEY}\r\n"
    for host in ("evil.example", "localhost.evil.example:80", "10.0.0.1"):
        request = f"GET /v1/model HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n".encode()
        status, _, body = raw(served.http_port, request)
        assert status == 421 and json.loads(body)["error"]["field"] == "Host", host
    request = b"GET /healthz HTTP/1.0\r\n\r\n"  # no Host at all
    assert raw(served.http_port, request)[0] == 421
    for host in ("localhost", f"127.0.0.1:{served.http_port}", "[::1]"):
        request = f"GET /v1/model HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n".encode()
        assert raw(served.http_port, request)[0] == 200, host


def test_errors_have_the_json_shape_and_metrics_record_the_status_sent(served: Served) -> None:
    key = bearer(ENV_KEY)
    not_found = requests.get(served.url + "/v1/nothing-here", headers=key, timeout=10)
    wrong_method = requests.get(served.url + "/v1/classify", headers=key, timeout=10)
    too_big = post(served, "/v1/classify", b"{" + b" " * 70000 + b"}", **key)
    status, _, body = raw(
        served.http_port, b"GET /v1/model HTTP/1.1\r\nHost: localhost\r\nX: " + b"a" * 9000 + b"\r\n\r\n"
    )
    for response_status, error, expected in (
        (not_found.status_code, not_found.json()["error"], 404),
        (wrong_method.status_code, wrong_method.json()["error"], 405),
        (too_big.status_code, too_big.json()["error"], 413),
        (status, json.loads(body)["error"], None),
    ):
        assert expected is None or response_status == expected
        assert 400 <= response_status < 500 and error["status"] and error["message"] and error["code"]
    assert "GET" not in wrong_method.headers.get("Allow", "GET")  # Allow is kept: POST only
    scrape = requests.get(served.url + "/metrics", headers=key, timeout=30).text
    counts = [
        line for line in scrape.splitlines() if line.startswith("http_server_request_duration_seconds_count")
    ]
    sent = {re.search(r'http_response_status_code="(\d+)"', line).group(1) for line in counts}  # type: ignore[union-attr]
    assert {"404", "405", "413"} <= sent and "500" not in sent, counts


def test_half_sent_requests_and_idle_connections_are_closed(served: Served) -> None:
    half = []
    for _ in range(30):
        sock = socket.create_connection(("127.0.0.1", served.http_port), timeout=HEADER_TIMEOUT_S + 30)
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
        half.append(sock)
    idle = socket.create_connection(("127.0.0.1", served.http_port), timeout=HEADER_TIMEOUT_S + 30)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200")  # kept alive, then left idle
    try:
        for sock in [*half, idle]:
            # Closed by the server: EOF (b"") or a reset, never a timeout; never an answer.
            try:
                assert sock.recv(65536) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in [*half, idle]:
            sock.close()


def test_connections_over_the_cap_get_503(served: Served) -> None:
    held = [
        socket.create_connection(("127.0.0.1", served.http_port), timeout=30) for _ in range(MAX_CONNECTIONS)
    ]
    try:
        time.sleep(0.5)
        status, _, body = raw(served.http_port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert status == 503 and json.loads(body)["error"]["status"] == "UNAVAILABLE"
    finally:
        for sock in held:
            sock.close()
    end = time.monotonic() + 30
    while requests.get(served.url + "/healthz", timeout=10).status_code != 200:
        assert time.monotonic() < end
        time.sleep(0.2)


HEADER_BYTES = st.binary(max_size=120).filter(lambda b: b"\r" not in b and b"\n" not in b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    auth=st.one_of(st.sampled_from([f"Bearer {ENV_KEY}".encode(), b"Bearer", b"Basic x", b""]), HEADER_BYTES),
    host=st.one_of(st.sampled_from([b"localhost", b"127.0.0.1:1", b"evil.example", b"[::1"]), HEADER_BYTES),
    kind=st.one_of(
        st.sampled_from([b"application/json", b"application/x-ndjson; charset=utf-8", b"text/plain"]),
        HEADER_BYTES,
    ),
)
def test_any_header_values_get_a_typed_answer_never_a_500(
    served: Served, auth: bytes, host: bytes, kind: bytes
) -> None:
    request = (
        b"POST /v1/classify HTTP/1.1\r\nHost: "
        + host
        + b"\r\nAuthorization: "
        + auth
        + b"\r\nContent-Type: "
        + kind
        + b"\r\nConnection: close\r\nContent-Length: "
        + str(len(BODY)).encode()
        + b"\r\n\r\n"
        + BODY
    )
    status, _, body = raw(served.http_port, request)
    assert status in (200, 400, 401, 415, 421), (status, body)
    if status != 200:
        error = json.loads(body)["error"]
        assert error["status"] and error["message"]
    assert requests.get(served.url + "/healthz", timeout=10).status_code == 200


def test_sighup_reloads_the_keys_file_on_both_edges(served: Served) -> None:
    served.keys.write_text(f"{NEW_KEY}\n")
    served.proc.send_signal(signal.SIGHUP)
    wait_for(served, r"reloaded: 2 API keys")
    assert post(served, "/v1/classify", **bearer(FILE_KEY)).status_code == 401
    assert post(served, "/v1/classify", **bearer(NEW_KEY)).status_code == 200
    assert classify_grpc(served, FILE_KEY) is grpc.StatusCode.UNAUTHENTICATED
    assert classify_grpc(served, NEW_KEY) is grpc.StatusCode.OK
    served.keys.write_text(f"{NEW_KEY}\nnot a key\n")  # a bad line refuses the whole reload
    served.proc.send_signal(signal.SIGHUP)
    wait_for(served, r"reload failed, keeping the running config")
    assert classify_grpc(served, NEW_KEY) is grpc.StatusCode.OK
    served.keys.write_text("")  # every file key revoked: the environment's key stays
    served.proc.send_signal(signal.SIGHUP)
    wait_for(served, r"reloaded: 1 API keys")
    assert classify_grpc(served, NEW_KEY) is grpc.StatusCode.UNAUTHENTICATED
    assert post(served, "/v1/classify", **bearer(ENV_KEY)).status_code == 200
    assert classify_grpc(served, None) is grpc.StatusCode.UNAUTHENTICATED


def test_keys_never_appear_in_the_log(served: Served) -> None:
    # A header line too long for the parser, holding a key: refused, and the line is not logged.
    raw(
        served.http_port,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
        + FILE_KEY.encode() * 600
        + b"\r\n\r\n",
    )
    time.sleep(0.5)
    text = served.text()
    assert "reloaded" in text
    for key in (FILE_KEY, ENV_KEY, NEW_KEY):
        assert key not in text
