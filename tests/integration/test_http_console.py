"""The web console in a real browser (Debian's headless Chromium, driven by playwright-core).

The playground must show the scores the API returns; the live view, opened while Kafka events and
HTTP calls flow, must show its counters moving, and its charts must show a burst of dead letters
that happened before the page was opened (the server keeps the history, not the page). Real broker,
worker, model and servers throughout.
Screenshots go to a temporary folder, or to GLICLASS_SCREENSHOTS_DIR (docs/ keeps the README's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fixtures.http import HttpStack
from fixtures.kafka import worker_config
from fixtures.npm import npm_modules
from opentelemetry.sdk.metrics import MeterProvider

from gliclass_core import telemetry
from gliclass_core.telemetry.setup import prometheus_reader
from worker.app import KafkaWorker

HARNESS = Path(__file__).parent / "browser"
TEXTS = ["My card was charged twice this month", "The app crashes when I open settings"]
LABELS = ["billing", "bug report", "feature request"]
EVENTS = [
    "I was billed twice for one order",
    "Login fails with an error after the update",
    "Could you add an export to CSV?",
    '{"id": "broken',  # a dead letter now and then
]
BURST = 24  # dead letters sent before the page opens
API_KEY = "console-test-key"


def history_dead_letters(url: str) -> int:
    rows = requests.get(url + "/v1/stats?history=3600", timeout=10).json()["history"]["rows"]
    return sum(sum(row["dead_letters"].values()) for row in rows)


def chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip("chromium not found: apt-get install -y chromium (.ci/run installs it as root)")


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed: the console test needs Node.js >= 18")
    npm_modules(HARNESS, "playwright-core")  # `npm ci` once per session, or a skip saying why
    return found


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


def test_console_playground_shows_the_apis_scores_and_live_view_moves(
    node: str, kafka: Any, topic_name: Any, group_id: str, kafka_runtime: Any, registry: Any, tmp_path: Path
) -> None:
    browser = chromium()
    shots = Path(os.environ.get("GLICLASS_SCREENSHOTS_DIR") or tmp_path)
    topic_in, topic_out, topic_dlq = topic_name("tickets"), topic_name("scored"), topic_name("dlq")
    kafka.create_topics({topic_in: 3, topic_out: 3, topic_dlq: 1})
    app_config = worker_config(
        kafka, group_id, [{"input": topic_in, "output": topic_out, "dlq": topic_dlq, "label_set": "support"}]
    )
    worker = KafkaWorker(kafka_runtime, app_config)
    stack = HttpStack(kafka_runtime, registry=registry, worker=lambda: worker)
    worker.start()
    stop = threading.Event()

    def feed() -> None:
        """Keep events and HTTP calls flowing while the browser watches."""
        producer = kafka.producer()
        i = 0
        while not stop.is_set():
            producer.produce(topic_in, value=EVENTS[i % len(EVENTS)].encode(), partition=i % 3)
            producer.poll(0)
            if i % 4 == 0:
                body = {"items": [{"text": EVENTS[i % 3], "labels": LABELS}]}
                requests.post(stack.url + "/v1/classify", json=body, timeout=30)
            i += 1
            stop.wait(0.15)
        producer.flush(10)

    feeder = threading.Thread(target=feed, daemon=True)
    try:
        # A burst of dead letters, then quiet: it must be in the history before any page exists.
        producer = kafka.producer()
        for i in range(BURST):
            producer.produce(topic_in, value=b'{"id": "burst', partition=i % 3)
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 60
        while history_dead_letters(stack.url) < BURST:
            assert time.monotonic() < deadline, "the burst never reached the console's history"
            time.sleep(0.5)
        feeder.start()
        done = subprocess.run(
            [node, "console.js", stack.url + "/", str(shots), json.dumps(TEXTS), ", ".join(LABELS), API_KEY],
            cwd=HARNESS,
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "CHROMIUM": browser},
        )
        assert done.returncode == 0, done.stderr
        page = json.loads(done.stdout.strip().splitlines()[-1])
        api = requests.post(
            stack.url + "/v1/classify",
            json={"items": [{"id": str(i + 1), "text": t, "labels": LABELS} for i, t in enumerate(TEXTS)]},
            timeout=30,
        ).json()["results"]
    finally:
        stop.set()
        feeder.join(30)
        assert worker.stop(30)
        stack.close()

    # --- playground: the bars show exactly the API's scores, labels and flags
    assert len(page["results"]) == len(TEXTS)
    for shown, expected in zip(page["results"], api):
        assert [s["label"] for s in shown["scores"]] == [s["label"] for s in expected["scores"]]
        assert [s["score"] for s in shown["scores"]] == pytest.approx(
            [s["score"] for s in expected["scores"]], abs=1e-4
        )
        assert shown["predicted"] == (", ".join(expected["labels"]) or "none")
        assert "not truncated" in shown["meta"] and "1 label chunk" in shown["meta"]
        assert "compute" in shown["meta"] and "ms" in shown["meta"]
    assert page["external"] == [], "the console fetched something from outside the server"

    # --- live view: counters moved while it was open
    before, after = page["before"], page["after"]
    assert after["edges"]["kafka"]["items"] > before["edges"].get("kafka", {"items": 0})["items"]
    assert after["edges"]["http"]["items"] > before["edges"]["http"]["items"]
    assert after["lagRows"] >= 1 and after["routes"] == [topic_in]
    assert any("invalid_json" in row for row in after["deadRows"]), after["deadRows"]

    # --- charts: drawn from the server's history, including the burst from before the page opened
    assert page["chartCanvases"] >= 7
    dead = page["charts"]["chart-dead"]
    before_open = [i for i, t in enumerate(dead["t"]) if t < page["openedAt"]]
    burst_seen = sum((series[i] or 0) for series in dead["data"] for i in before_open)
    assert burst_seen >= BURST, dead
    assert "invalid_json" in dead["labels"]
    assert {"kafka", "http"} <= set(page["charts"]["chart-items"]["labels"])
    assert kafka_runtime.info.model_id in page["model"]

    # --- API key: asked for after a 401, then sent on every request, kept nowhere but the page
    assert page["promptShown"]
    assert len(page["keyedRequests"]) >= 3
    assert all(r["auth"] == f"Bearer {API_KEY}" for r in page["keyedRequests"]), page["keyedRequests"]
    assert page["stored"] == {"local": 0, "session": 0, "cookie": ""}
    assert (shots / "console-playground.png").stat().st_size > 10_000
    assert (shots / "console-live.png").stat().st_size > 10_000
