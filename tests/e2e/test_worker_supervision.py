"""No part dies silently: a Kafka worker loop that stops takes `worker` and `serve` down, loudly.

The fault is real, not injected: a second producer with the worker's transactional id (what a
second worker started with the same `instance_id` does) fences the running exactly-once worker.
A fenced producer must never write again, so the loop stops; the process must then exit non-zero
with the reason logged (and `serve` must go NOT_SERVING first), so compose / Kubernetes restart it.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_worker_cli import Reader, Worker, cli, produce, write_config

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def e2e_topics(kafka, topic_name):
    src, out = topic_name("sup-in"), topic_name("sup-out")
    kafka.create_topics({src: 3, out: 3, f"{src}.dlq": 3})
    return src, out


def fence(kafka, transactional_id: str) -> None:
    """Start a newer producer with the same transactional id: the broker fences the older one."""
    from confluent_kafka import Producer

    Producer(
        {"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": transactional_id}
    ).init_transactions(30)


def eos_config(
    path: Path, kafka, group_id: str, src: str, out: str, instance: str, grpc_address: str = ""
) -> Path:
    write_config(
        path,
        kafka,
        group_id,
        src,
        out,
        "support",
        delivery="exactly-once",
        instance_id=instance,
        commit_interval_ms=200,
    )
    if grpc_address:
        path.write_text(path.read_text() + f'\n[grpc]\naddress = "{grpc_address}"\nshutdown_grace_s = 2\n')
    return path


def committed_outputs(kafka, out: str, n: int) -> None:
    reader = Reader(kafka, out, 3, **{"isolation.level": "read_committed"})
    try:
        reader.until(lambda r: len(r) >= n, timeout=180)
    finally:
        reader.close()


def test_worker_exits_non_zero_with_the_reason_when_its_loop_stops(
    kafka, e2e_topics, group_id, tmp_path, gliclass_cache
):
    src, out = e2e_topics
    config = eos_config(tmp_path / "w.toml", kafka, group_id, src, out, "fenced-w")
    worker = Worker(config, tmp_path / "w.log")
    try:
        produce(kafka, src, 30)
        committed_outputs(kafka, out, 30)  # the loop runs and commits
        fence(kafka, f"{group_id}.fenced-w")
        produce(kafka, src, 30, start=30)  # its next transaction is refused by the broker
        code = worker.proc.wait(120)
        log = worker.log.read_text(errors="replace")
        assert code == 1, log[-3000:]
        assert "the kafka worker stopped" in log and "fenced" in log.lower(), log[-3000:]
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()


class Serve:
    """A `serve` process: its gRPC address, its output, and the statuses a health Watch heard."""

    def __init__(self, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GLICLASS_")}
        self.proc = subprocess.Popen(
            [*cli(), "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
        self.output: list[str] = []
        self.statuses: list[int] = []
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [(lines.put(x), self.output.append(x)) for x in self.proc.stdout or ()],
            daemon=True,
        ).start()
        address = None
        deadline = time.monotonic() + 180
        while address is None:
            assert time.monotonic() < deadline and self.proc.poll() is None, self.log[-3000:]
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if "listening on" in line:
                address = line.rsplit(" ", 1)[-1].strip()
        self.channel = grpc.insecure_channel(address)
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    @property
    def log(self) -> str:
        return "".join(self.output)

    def _watch(self) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            for reply in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=300):
                self.statuses.append(reply.status)
        except grpc.RpcError:
            pass  # the server went away

    def wait_serving(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while SERVING not in self.statuses:
            assert time.monotonic() < deadline and self.proc.poll() is None, (self.statuses, self.log[-3000:])
            time.sleep(0.1)

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_serve_goes_not_serving_and_exits_non_zero_when_the_kafka_worker_stops(
    kafka, e2e_topics, group_id, tmp_path, gliclass_cache
):
    src, out = e2e_topics
    serve = Serve(eos_config(tmp_path / "s.toml", kafka, group_id, src, out, "fenced-s", "127.0.0.1:0"))
    try:
        produce(kafka, src, 30)
        committed_outputs(kafka, out, 30)
        serve.wait_serving()
        fence(kafka, f"{group_id}.fenced-s")
        produce(kafka, src, 30, start=30)
        code = serve.proc.wait(120)
        serve.watcher.join(10)
        assert code != 0, serve.log[-3000:]
        assert "the kafka worker stopped" in serve.log and "fenced" in serve.log.lower(), serve.log[-3000:]
        # Health watchers heard NOT_SERVING after SERVING, before the port closed.
        assert NOT_SERVING in serve.statuses[serve.statuses.index(SERVING) :], serve.statuses
    finally:
        serve.close()


def test_serve_drains_its_kafka_worker_for_the_configured_time_and_exits_0(
    kafka, e2e_topics, group_id, tmp_path, gliclass_cache
):
    src, out = e2e_topics
    config = write_config(tmp_path / "d.toml", kafka, group_id, src, out, "support", drain_timeout_ms=7000)
    config.write_text(config.read_text() + '\n[grpc]\naddress = "127.0.0.1:0"\nshutdown_grace_s = 2\n')
    serve = Serve(config)
    try:
        produce(kafka, src, 30)
        committed_outputs(kafka, out, 30)
        serve.wait_serving()
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(60) == 0, serve.log[-3000:]
        # The worker's drain follows [kafka] drain_timeout_ms, not the gRPC grace period (2 s).
        assert "kafka worker draining (up to 7.0 s)" in serve.log, serve.log[-3000:]
    finally:
        serve.close()


def test_sigterm_right_after_sighup_still_stops_the_worker(
    kafka, e2e_topics, group_id, tmp_path, gliclass_cache
):
    src, out = e2e_topics
    config = write_config(tmp_path / "r.toml", kafka, group_id, src, out, "support", drain_timeout_ms=7000)
    worker = Worker(config, tmp_path / "r.log")
    try:
        worker.wait_log("ready")
        # Both land before the main thread handles the first: the reload must not swallow the stop.
        worker.proc.send_signal(signal.SIGHUP)
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(90) == 0, worker.log.read_text()[-3000:]
        log = worker.log.read_text()
        assert "kafka worker draining (up to 7.0 s)" in log and "stopped" in log
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
