"""`/metrics` and `/v1/stats` with every edge busy: real gRPC, HTTP, Kafka worker and broker, real model.

The meter provider carries the SDK's Prometheus reader (as `serve` sets it up with `[http]`); the
scrape is parsed with prometheus_client's own parser and must carry every metric the README lists.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from fixtures.http import HttpStack
from fixtures.kafka import worker_config
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.parser import text_string_to_metric_families

from gliclass_core import telemetry
from gliclass_core.telemetry.setup import prometheus_reader
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc
from worker.app import KafkaWorker

README = Path(__file__).parents[2] / "docs" / "operations" / "observability.md"
LABELS = ["billing", "bug report", "feature request"]
GOOD, BAD = 6, [b'{"text": "unterminated', b'{"id": "no-text"}']


def readme_metrics() -> list[str]:
    """The metric names in the metrics table of the Observability page (docs/operations/observability.md)."""
    text = README.read_text()
    table = text[text.index("**Metrics**") :].split("\n\n", 2)[1]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return [name for cell in first_cells for name in re.findall(r"`([a-z_.]+)`", cell)]


def prometheus_name(otel_name: str) -> str:
    return otel_name.replace(".", "_")


@pytest.fixture
def registry(kafka_runtime: Any) -> Iterator[Any]:
    registry, reader = prometheus_reader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.install(None, provider)
    telemetry.observe_runtime(kafka_runtime)
    yield registry
    telemetry.forget_runtime(kafka_runtime)
    telemetry.uninstall()
    provider.shutdown()


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_scrape_carries_every_readme_metric_and_stats_follow_the_edges(
    kafka: Any, topic_name: Any, group_id: str, kafka_runtime: Any, registry: Any
) -> None:
    topic_in, topic_out, topic_dlq = topic_name("http-in"), topic_name("http-out"), topic_name("http-dlq")
    kafka.create_topics({topic_in: 2, topic_out: 2, topic_dlq: 1})
    app_config = worker_config(
        kafka, group_id, [{"input": topic_in, "output": topic_out, "dlq": topic_dlq, "label_set": "support"}]
    )
    worker = KafkaWorker(kafka_runtime, app_config)
    stack = HttpStack(kafka_runtime, registry=registry, worker=lambda: worker)
    worker.start()
    try:
        first = requests.get(stack.url + "/v1/stats", timeout=10).json()
        producer = kafka.producer()
        for i in range(GOOD):
            producer.produce(
                topic_in, value=f"my card was charged twice, ticket {i}".encode(), partition=i % 2
            )
        for value in BAD:
            producer.produce(topic_in, value=value, partition=0)
        assert producer.flush(30) == 0
        item = pb.Item(text="the app crashes on start", labels=LABELS)
        with grpc.insecure_channel(stack.grpc_address) as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            stub.Classify(pb.ClassifyRequest(items=[item, item]), timeout=30)
        body = {"items": [{"text": "please add a dark mode", "labels": LABELS}] * 3}
        assert requests.post(stack.url + "/v1/classify", json=body, timeout=30).status_code == 200
        kafka.read_all([topic_out, topic_dlq], GOOD + len(BAD))
        wait_for(lambda: worker.stats().scored == GOOD, what="the worker to score every event")
        time.sleep(1.1)  # stats compare with a snapshot at least a second old

        started = time.perf_counter()
        scrape = requests.get(stack.url + "/metrics", timeout=30)
        scrape_ms = (time.perf_counter() - started) * 1000
        stats = requests.get(stack.url + "/v1/stats", timeout=10).json()
    finally:
        assert worker.stop(30)
        stack.close()

    # --- /metrics: Prometheus text, parsed by prometheus_client, with every README metric
    assert scrape.status_code == 200 and scrape.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
    listed = readme_metrics()
    assert len(listed) >= 12, listed
    cuda_only = {"gliclass.gpu.memory.used"}  # only exported while the process uses CUDA
    missing = [
        name
        for name in listed
        if name not in cuda_only and not any(f.startswith(prometheus_name(name)) for f in families)
    ]
    assert not missing, f"README metrics absent from /metrics: {missing} (have {sorted(families)})"

    def samples(family: str, suffix: str = "", **labels: str) -> list[Any]:
        return [
            s
            for s in families[family].samples
            if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    items = {s.labels["gliclass_outcome"]: s.value for s in samples("gliclass_scheduler_items", "_total")}
    assert items["completed"] >= GOOD + 5
    grpc_calls = samples(
        "rpc_server_call_duration_seconds", "_count", rpc_method="gliclass.v1.Classifier/Classify"
    )
    assert sum(s.value for s in grpc_calls) >= 1
    http_calls = samples("http_server_request_duration_seconds", "_count", http_route="/v1/classify")
    assert sum(s.value for s in http_calls) == 1
    lag = samples("gliclass_kafka_consumer_lag", messaging_destination_name=topic_in)
    assert {s.labels["messaging_destination_partition_id"] for s in lag} == {"0", "1"}
    assert scrape_ms < 30_000
    print(f"/metrics scrape: {len(scrape.content)} bytes in {scrape_ms:.1f} ms")

    # --- /v1/stats: the live view's figures moved with the traffic
    assert first["edges"]["grpc"]["items"] == 0 and first["edges"]["http"]["items"] == 0
    edges = stats["edges"]
    assert (edges["grpc"]["items"], edges["http"]["items"], edges["kafka"]["items"]) == (
        2,
        3,
        GOOD + len(BAD),
    )
    assert edges["kafka"]["items_per_s"] > 0 and stats["completed_per_s"] > 0
    assert edges["grpc"]["latency"]["p50_ms"] > 0 and edges["kafka"]["latency"]["p99_ms"] > 0
    assert stats["batch"]["mean_size"] >= 1 and 0 < stats["batch"]["padding_efficiency"] <= 1
    assert stats["dead_letters"] and sum(stats["dead_letters"].values()) == len(BAD)
    route_labels = stats["labels_by_route"][topic_in]
    assert set(route_labels) <= set(LABELS) and sum(route_labels.values()) >= 1
    assert {(row["topic"], row["partition"]) for row in stats["consumer_lag"]} >= {
        (topic_in, 0),
        (topic_in, 1),
    }
    json.dumps(stats)  # plain JSON all the way down
