"""`gliclass-stream serve` and `gliclass-stream health` as a user (or Docker) runs them."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc

CONFIG = """
[model]
id = "builtin:minilm"
device = "cpu"

[label_sets.support]
labels = ["billing", "bug report", "feature request"]

[grpc]
address = "127.0.0.1:0"
shutdown_grace_s = 30
"""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "server.app.cli", *args]


Served = tuple[subprocess.Popen[str], str, "queue.Queue[str]"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A `serve` process on `tmp_path / "gliclass.toml"`: the process, its address, its output lines."""
    config = tmp_path / "gliclass.toml"
    config.write_text(CONFIG, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLICLASS_")}
    proc = subprocess.Popen(
        cli("serve", "--config", str(config)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    address = None
    end = time.monotonic() + 120
    while address is None and time.monotonic() < end and proc.poll() is None:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if "listening on" in line:
            address = line.rsplit(" ", 1)[-1].strip()
    try:
        assert address, f"serve did not report its address (exit {proc.poll()})"
        yield proc, address, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def wait_healthy(proc: subprocess.Popen[str], address: str) -> None:
    """Poll the Docker HEALTHCHECK command: non-zero until the model is warm, then 0."""
    end = time.monotonic() + 180
    while subprocess.run(
        cli("health", "--address", address, "--timeout", "5"), capture_output=True
    ).returncode:
        assert proc.poll() is None, "serve exited before becoming healthy"
        assert time.monotonic() < end, "serve never became SERVING"
        time.sleep(0.5)


def test_serve_reports_health_serves_and_drains_on_sigterm(served: Served) -> None:
    proc, address, _ = served
    wait_healthy(proc, address)

    with grpc.insecure_channel(address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

        # A stream that is open when SIGTERM arrives keeps being served until the client ends it.
        outbox: queue.Queue[pb.ClassifyStreamRequest | None] = queue.Queue()
        responses = stub.ClassifyStream(iter(outbox.get, None), timeout=60)
        item = pb.Item(text="I was charged twice", label_set="support")
        outbox.put(
            pb.ClassifyStreamRequest(items=[pb.Item(id="before", text=item.text, label_set="support")])
        )
        assert next(responses).result.id == "before"

        proc.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        for i in range(3):
            outbox.put(
                pb.ClassifyStreamRequest(items=[pb.Item(id=f"after{i}", text=item.text, label_set="support")])
            )
        outbox.put(None)
        after = list(responses)
        assert [r.result.id for r in after] == ["after0", "after1", "after2"]
        assert all(len(r.result.scores) == 3 and not r.result.HasField("error") for r in after)

    assert proc.wait(timeout=60) == 0


def wait_for_line(lines: queue.Queue[str], text: str) -> str:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        with contextlib.suppress(queue.Empty):
            line = lines.get(timeout=1)
            if text in line:
                return line
    raise AssertionError(f"serve never printed {text!r}")


def test_sighup_reloads_label_sets_and_keeps_the_old_config_on_a_bad_file(
    served: Served, tmp_path: Path
) -> None:
    proc, address, lines = served
    config = tmp_path / "gliclass.toml"
    wait_healthy(proc, address)
    with grpc.insecure_channel(address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        urgent = pb.ClassifyRequest(items=[pb.Item(text="The site is down right now!", label_set="urgency")])
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Classify(urgent, timeout=30)
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # A broken file: the error names the problem, the running label sets keep serving.
        config.write_text(CONFIG + "\n[label_sets.urgency]\nlabels = []\n", encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        error = wait_for_line(lines, "reload failed")
        assert "[label_sets.urgency] labels must be a non-empty list" in error
        assert proc.poll() is None
        names = [s.name for s in stub.ListLabelSets(pb.ListLabelSetsRequest(), timeout=10).label_sets]
        assert names == ["support"]
        supported = stub.Classify(
            pb.ClassifyRequest(items=[pb.Item(text="I was charged twice", label_set="support")]), timeout=30
        )
        assert len(supported.results[0].scores) == 3

        # A good file: the new label set is listed and usable without a restart.
        config.write_text(
            CONFIG + '\n[label_sets.urgency]\nlabels = ["urgent", "not urgent"]\n', encoding="utf-8"
        )
        proc.send_signal(signal.SIGHUP)
        wait_for_line(lines, "reloaded label sets")
        listed = stub.ListLabelSets(pb.ListLabelSetsRequest(), timeout=10).label_sets
        assert [s.name for s in listed] == ["support", "urgency"]
        assert list(next(s for s in listed if s.name == "urgency").labels) == ["urgent", "not urgent"]
        result = stub.Classify(urgent, timeout=30).results[0]
        assert not result.HasField("error") and result.label_set == "urgency"
        assert [s.label for s in result.scores] == ["urgent", "not urgent"]

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_serve_with_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[grpc]\naddress = "127.0.0.1:0"\nmax_text_chars = 0\n', encoding="utf-8")
    done = subprocess.run(cli("serve", "--config", str(config)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "[grpc] max_text_chars must be a positive integer" in done.stderr


def test_health_exits_1_when_nothing_listens() -> None:
    with unused_port() as port:
        done = subprocess.run(
            cli("health", "--address", f"127.0.0.1:{port}", "--timeout", "2"), capture_output=True, text=True
        )
    assert done.returncode == 1 and "UNAVAILABLE" in done.stderr


@contextlib.contextmanager
def unused_port() -> Iterator[int]:
    """A loopback port that is bound (so nobody else takes it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_serve_exits_2_when_the_model_cannot_load(tmp_path: Path) -> None:
    config = tmp_path / "missing-model.toml"
    missing = tmp_path / "no-such-checkpoint"
    config.write_text(f'[model]\nid = "{missing}"\n[grpc]\naddress = "127.0.0.1:0"\n', encoding="utf-8")
    done = subprocess.run(cli("serve", "--config", str(config)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "the model failed to load" in done.stderr and "no-such-checkpoint" in done.stderr
