"""A route collapses onto one top label and the exported share crosses the alert's threshold.

Real broker, worker, model (builtin MiniLM) and Prometheus reader. The detector's windows are
shortened (10 s window, 2 min baseline, 1 s buckets) so the test does not wait five minutes; the
computation is the one `serve` and `worker` run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.kafka import worker_config
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gliclass_core import telemetry
from gliclass_core.telemetry.collapse import TopLabelShare
from gliclass_core.telemetry.setup import prometheus_reader
from worker.app import KafkaWorker

#: The thresholds of the GliclassPredictionCollapse alert (docker/prometheus/alerts.yaml).
SHARE_THRESHOLD, CHANGE_THRESHOLD = 0.9, 0.3
VARIED = [
    "I was charged twice for one order and want a refund",
    "The app crashes every time I open the settings page",
    "Please add an option to export my data as CSV",
]
SAME = "I was charged twice for one order and want a refund"
SHARE = "gliclass_predictions_top_label_share"
CHANGE = "gliclass_predictions_top_label_share_change"


@pytest.fixture
def registry(kafka_runtime: Any) -> Iterator[Any]:
    registry, reader = prometheus_reader()
    provider = MeterProvider(metric_readers=[reader])
    instruments = telemetry.install(None, provider)
    assert instruments is not None
    instruments.top_labels = TopLabelShare(window_s=10, baseline_s=120, bucket_s=1, min_count=6)
    yield registry
    telemetry.uninstall()
    provider.shutdown()


def scrape(registry: Any, name: str, route: str) -> dict[str, float]:
    """The gauge's value per top label for this route."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("gliclass_route") == route:
                assert sample.labels["gliclass_label_set"] == "support"
                out[sample.labels["gliclass_label"]] = sample.value
    return out


def test_a_collapsing_route_drives_the_top_label_share_over_the_threshold(
    kafka: Any, topic_name: Any, group_id: str, kafka_runtime: Any, registry: Any
) -> None:
    topic_in, topic_out, topic_dlq = (
        topic_name("collapse-in"),
        topic_name("collapse-out"),
        topic_name("collapse-dlq"),
    )
    kafka.create_topics({topic_in: 1, topic_out: 1, topic_dlq: 1})
    config = worker_config(
        kafka, group_id, [{"input": topic_in, "output": topic_out, "dlq": topic_dlq, "label_set": "support"}]
    )
    worker = KafkaWorker(kafka_runtime, config)
    worker.start()
    producer = kafka.producer()

    def send(texts: list[str], scored: int) -> None:
        for text in texts:
            producer.produce(topic_in, value=text.encode())
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 120
        while worker.stats().scored < scored:
            assert time.monotonic() < deadline, "the worker did not score every event"
            time.sleep(0.2)

    try:
        send(VARIED * 6, 18)  # healthy: three kinds of ticket, three different top labels
        healthy = scrape(registry, SHARE, topic_in)
        assert healthy and max(healthy.values()) < SHARE_THRESHOLD, healthy
        time.sleep(11)  # the healthy traffic leaves the window and becomes the baseline
        send([SAME] * 18, 36)  # collapse: every event gets the same top label
        collapsed = scrape(registry, SHARE, topic_in)
        change = scrape(registry, CHANGE, topic_in)
    finally:
        assert worker.stop(30)
    (label,) = collapsed
    assert collapsed[label] >= SHARE_THRESHOLD, collapsed
    assert change[label] >= CHANGE_THRESHOLD, change
    print(
        f"top-label share: healthy {max(healthy.values()):.2f}, collapsed {collapsed[label]:.2f}",
        f"(+{change[label]:.2f})",
    )
