"""`[http.tls]` on a real `serve`: mutual TLS refuses clients without a certificate from the CA.

The probes answer while the model loads, so these tests never wait for it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fixtures.grpc import TlsFiles


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "server.app.cli", *args]


def config_text(tls: TlsFiles, http_address: str, http_tls: bool) -> str:
    files = (
        f'cert_file = "{tls.server_cert}"\nkey_file = "{tls.server_key}"\n'
        f'client_ca_file = "{tls.ca}"\nrequire_client_cert = true\n'
    )
    text = f"""
[model]
id = "builtin:minilm"
device = "cpu"

[grpc]
address = "127.0.0.1:0"

[grpc.tls]
{files}
[http]
address = "{http_address}"
"""
    return text + (f"\n[http.tls]\n{files}" if http_tls else "")


def start(tmp_path: Path, text: str) -> tuple[subprocess.Popen[bytes], Path]:
    config, log = tmp_path / "gliclass.toml", tmp_path / "serve.log"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLICLASS_")}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cli("serve", "--config", str(config)),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
    return proc, log


def wait_for(proc: subprocess.Popen[bytes], log: Path, pattern: str) -> re.Match[str]:
    end = time.monotonic() + 120
    while time.monotonic() < end:
        match = re.search(pattern, log.read_text(errors="replace"))
        if match:
            return match
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"serve never logged {pattern!r}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture
def mtls_serve(tls_files: TlsFiles, tmp_path: Path) -> Iterator[str]:
    proc, log = start(tmp_path, config_text(tls_files, "127.0.0.1:0", http_tls=True))
    try:
        port = wait_for(proc, log, r"HTTP on https://127\.0\.0\.1:(\d+)/").group(1)
        yield f"https://localhost:{port}"
    finally:
        stop(proc)


def test_http_mutual_tls_refuses_clients_without_a_certificate_from_the_ca(
    mtls_serve: str, tls_files: TlsFiles
) -> None:
    ca = str(tls_files.ca)
    good = (str(tls_files.client_cert), str(tls_files.client_key))
    assert requests.get(mtls_serve + "/healthz", verify=ca, cert=good, timeout=30).status_code == 200
    rogue = (str(tls_files.rogue_client_cert), str(tls_files.rogue_client_key))
    for cert in (None, rogue):
        with pytest.raises(requests.exceptions.ConnectionError):  # the handshake fails (SSLError is one)
            requests.get(mtls_serve + "/healthz", verify=ca, cert=cert, timeout=30)
    with pytest.raises(requests.exceptions.ConnectionError):  # plaintext to a TLS port
        requests.get(mtls_serve.replace("https", "http") + "/healthz", timeout=30)


def test_plaintext_http_beside_grpc_mutual_tls_is_refused_off_loopback(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    config = tmp_path / "gliclass.toml"
    config.write_text(config_text(tls_files, "0.0.0.0:0", http_tls=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLICLASS_")}
    done = subprocess.run(
        cli("serve", "--config", str(config)), capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode != 0 and "[http.tls]" in done.stderr + done.stdout


def test_plaintext_http_beside_grpc_mutual_tls_on_loopback_warns(tls_files: TlsFiles, tmp_path: Path) -> None:
    proc, log = start(tmp_path, config_text(tls_files, "127.0.0.1:0", http_tls=False))
    try:
        wait_for(proc, log, r"WARNING .*REQUIRES CLIENT CERTIFICATES.*loopback")
    finally:
        stop(proc)
