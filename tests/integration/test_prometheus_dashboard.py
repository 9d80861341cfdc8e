"""A real Prometheus scrapes a real `serve` (gRPC, HTTP and a Kafka route on the test broker) and
every query of the shipped Grafana dashboard returns data; the shipped alert rules load in it.

Debian's `prometheus` package provides the server (skipped with the reason when it is absent).
The collapse detector's windows are shortened through their environment variables, so the
share's change has a baseline within the test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from fixtures.kafka import CONSUMER_DEFAULTS

from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "gliclass.json"
RULES = ROOT / "docker" / "prometheus" / "alerts.yaml"
LABELS = ["billing", "bug report", "feature request"]
TEXTS = [
    "I was charged twice for one order",
    "The app crashes when I open the settings",
    "Please add an export to CSV",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("prometheus not found: apt-get install -y prometheus (Debian's package)")
    return found


@pytest.fixture
def served(kafka: Any, topic_name: Any, group_id: str, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """`serve` with [grpc], [http] and one Kafka route: (HTTP URL, gRPC address, input topic)."""
    topic_in, topic_out, topic_dlq = topic_name("prom-in"), topic_name("prom-out"), topic_name("prom-dlq")
    kafka.create_topics({topic_in: 2, topic_out: 2, topic_dlq: 1})
    grpc_port, http_port = free_port(), free_port()
    consumer = "\n".join(f'"{k}" = {v}' for k, v in CONSUMER_DEFAULTS.items())
    config = tmp_path / "gliclass.toml"
    config.write_text(
        f"""
[model]
id = "builtin:minilm"
device = "cpu"

[label_sets.support]
labels = {json.dumps(LABELS)}

[grpc]
address = "127.0.0.1:{grpc_port}"

[http]
address = "127.0.0.1:{http_port}"

[kafka]
bootstrap_servers = "{kafka.bootstrap_servers}"
group_id = "{group_id}"

[kafka.consumer]
{consumer}

[[kafka.routes]]
input = "{topic_in}"
output = "{topic_out}"
dlq = "{topic_dlq}"
label_set = "support"
""",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLICLASS_", "OTEL_"))}
    env.update(GLICLASS_COLLAPSE_WINDOW_S="10", GLICLASS_COLLAPSE_BASELINE_S="120", PYTHONPATH=str(ROOT))
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.app.cli", "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve never became ready"
            try:
                if requests.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        yield url, f"127.0.0.1:{grpc_port}", topic_in
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture
def prometheus(prometheus_binary: str, served: tuple[str, str, str], tmp_path: Path) -> Iterator[str]:
    """Prometheus scraping the served /metrics every second, with the shipped alert rules."""
    url = served[0]
    port = free_port()
    shutil.copy(RULES, tmp_path / "alerts.yaml")
    (tmp_path / "prometheus.yml").write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yaml]
scrape_configs:
  - job_name: gliclass
    static_configs:
      - targets: ["{url.removeprefix("http://")}"]
""",
        encoding="utf-8",
    )
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def query(prometheus: str, expr: str) -> list[Any]:
    body = requests.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def test_every_dashboard_query_returns_data_from_a_real_serve(
    kafka: Any, served: tuple[str, str, str], prometheus: str
) -> None:
    url, grpc_address, topic_in = served
    producer = kafka.producer()

    def send_events(n: int) -> None:
        for i in range(n):
            producer.produce(topic_in, value=TEXTS[i % len(TEXTS)].encode(), partition=i % 2)
        assert producer.flush(30) == 0

    def scored() -> float:
        found = query(prometheus, "sum(gliclass_predicted_labels_total)")
        return float(found[0]["value"][1]) if found else 0.0

    def wait(predicate: Any, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(1)

    send_events(24)  # the share's baseline
    for value in (b'{"text": "unterminated', b'{"id": "no text"}'):
        producer.produce(topic_in, value=value)
    assert producer.flush(30) == 0
    with grpc.insecure_channel(grpc_address) as channel:
        item = pb.Item(text="the app crashes on start", labels=LABELS)
        classifier_pb2_grpc.ClassifierStub(channel).Classify(pb.ClassifyRequest(items=[item]), timeout=30)
    body = {"items": [{"text": "please add a dark mode", "labels": LABELS}]}
    assert requests.post(url + "/v1/classify", json=body, timeout=30).status_code == 200
    wait(lambda: scored() >= 24, "the first events to be scored and scraped")
    time.sleep(11)  # they leave the 10-s window and become the baseline
    send_events(24)
    wait(lambda: scored() >= 48, "the second events to be scored and scraped")
    time.sleep(3)  # a few more scrapes, so every rate() has two samples of every series

    empty = [expr for expr in dashboard_queries() if not query(prometheus, expr)]
    if empty:  # series created last may need one more scrape
        time.sleep(5)
        empty = [expr for expr in empty if not query(prometheus, expr)]
    assert not empty, f"dashboard queries without data: {empty}"

    rules = requests.get(prometheus + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {rule["name"]: rule["health"] for group in rules for rule in group["rules"]}
    assert len(loaded) == 7 and set(loaded.values()) == {"ok"}, loaded
