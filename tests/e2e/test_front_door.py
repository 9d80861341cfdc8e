"""One front door, tried as a hostile or careless client would, against a real `gliclass-stream serve`.

The builtin model on CPU with batches of at most 16 items, gRPC and HTTP on loopback: deadlines
on a running batch (16 long items: one batch), clients that hang up (HTTP unary and NDJSON, gRPC
unary), newline floods and bodies of a million items, while `/healthz` keeps answering.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from fixtures.serve import DEFAULT_CONFIG, Serve, start_serve

from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc

CONFIG = DEFAULT_CONFIG + "\n[batching]\nmax_batch_size = 16\n"
LONG_TEXT = " ".join(["the invoice total looked wrong after the latest update to the billing page"] * 25)
LABELS = ["billing", "bug report", "feature request", "account access", "praise"]


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with start_serve(tmp_path_factory.mktemp("front-door"), CONFIG) as served:
        yield served


def items(n: int, text: str = LONG_TEXT) -> list[dict[str, object]]:
    return [{"id": f"i{i}", "text": f"{i} {text}", "labels": LABELS} for i in range(n)]


def counters(serve: Serve) -> Counter[str]:
    """The scheduler's item counters by outcome (submitted, completed, expired, cancelled, ...)."""
    assert serve.url is not None
    text = requests.get(serve.url + "/metrics", timeout=30).text
    found = re.findall(
        r'gliclass_scheduler_items_total\{[^}]*gliclass_outcome="(\w+)"[^}]*\} ([0-9.e+]+)', text
    )
    # Summed over the other attributes (the device); an outcome not seen yet counts 0.
    totals: Counter[str] = Counter()
    for outcome, value in found:
        totals[outcome] += float(value)
    return totals


def settled(serve: Serve, timeout: float = 120) -> Counter[str]:
    """The counters once every submitted item has an outcome (nothing queued or computing)."""
    end = time.monotonic() + timeout
    while True:
        c = counters(serve)
        done = sum(c.get(k, 0) for k in ("completed", "failed", "expired", "cancelled"))
        if done >= c.get("submitted", 0) or time.monotonic() > end:
            return c
        time.sleep(0.2)


def full_call_seconds(serve: Serve, n: int) -> float:
    assert serve.url is not None
    started = time.monotonic()
    response = requests.post(serve.url + "/v1/classify", json={"items": items(n)}, timeout=300)
    assert response.status_code == 200
    return time.monotonic() - started


def test_http_deadline_answers_504_without_waiting_for_the_running_batch(serve: Serve) -> None:
    assert serve.url is not None
    full = full_call_seconds(serve, 16)
    before = settled(serve)
    timeout_ms = max(100, int(full * 1000 / 5))
    started = time.monotonic()
    response = requests.post(
        serve.url + "/v1/classify",
        json={"items": items(16)},
        headers={"X-Timeout-Ms": str(timeout_ms)},
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.json()["error"]["status"] == "DEADLINE_EXCEEDED"
    # Not a speed figure: the answer came before the work it gave up on could have finished.
    assert elapsed < full * 0.8, (elapsed, full)
    after = settled(serve)
    # The batch computing them was not waited for, and its results for them were discarded.
    assert after["expired"] - before["expired"] == 16
    assert after["completed"] - before["completed"] == 0


def test_grpc_deadline_on_a_running_batch(serve: Serve) -> None:
    request = pb.ClassifyRequest(
        items=[pb.Item(id=f"g{i}", text=f"{i} {LONG_TEXT}", labels=LABELS) for i in range(16)]
    )
    before = settled(serve)
    with grpc.insecure_channel(serve.grpc_address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(request, timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    after = settled(serve)
    assert after["completed"] - before["completed"] == 0


def _post_and_hang_up(serve: Serve, path: str, body: bytes, content_type: str, after_s: float = 0.3) -> None:
    assert serve.url is not None
    host, port = serve.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        time.sleep(after_s)


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/v1/classify", "application/json", json.dumps({"items": items(32)}).encode()),
        (
            "/v1/classify/stream",
            "application/x-ndjson",
            b"".join(json.dumps({"items": [item]}).encode() + b"\n" for item in items(32)),
        ),
    ],
    ids=["unary", "ndjson"],
)
def test_http_client_that_hangs_up_has_its_queued_items_dropped(
    serve: Serve, path: str, content_type: str, body: bytes
) -> None:
    before = settled(serve)
    _post_and_hang_up(serve, path, body, content_type)
    after = settled(serve)
    assert after["submitted"] - before["submitted"] == 32
    assert after["cancelled"] - before["cancelled"] >= 1
    assert after["completed"] - before["completed"] < 32


def test_grpc_client_that_cancels_has_its_queued_items_dropped(serve: Serve) -> None:
    request = pb.ClassifyRequest(
        items=[pb.Item(id=f"c{i}", text=f"{i} {LONG_TEXT}", labels=LABELS) for i in range(32)]
    )
    before = settled(serve)
    with grpc.insecure_channel(serve.grpc_address) as channel:
        call = classifier_pb2_grpc.ClassifierStub(channel).Classify.future(request)
        time.sleep(0.3)
        call.cancel()
    after = settled(serve)
    assert after["cancelled"] - before["cancelled"] >= 1
    assert after["completed"] - before["completed"] < 32


class HealthProbe:
    """Polls /healthz in a thread while something else runs; records every latency (or failure)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    ok = session.get(self.url + "/healthz", timeout=10).status_code == 200
                    if not ok:
                        self.failures.append("status")
                except requests.RequestException as exc:
                    self.failures.append(type(exc).__name__)
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.02)


def test_gzip_newline_flood_is_framed_in_linear_time_and_healthz_answers(serve: Serve) -> None:
    assert serve.url is not None
    flood = gzip.compress(b"\n" * (16 * 1024 * 1024), compresslevel=9)
    with HealthProbe(serve.url) as probe:
        response = requests.post(
            serve.url + "/v1/classify/stream",
            data=flood,
            headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
            timeout=120,
        )
        time.sleep(0.2)
    assert response.status_code in (200, 400, 413), response.text
    assert response.text.strip() == "" or "error" in response.text
    assert not probe.failures and probe.latencies  # every probe answered (10 s timeout each)
    assert requests.get(serve.url + "/healthz", timeout=10).status_code == 200


def test_a_million_empty_items_is_refused_naming_items_before_parsing(serve: Serve) -> None:
    assert serve.url is not None
    body = b'{"items":[' + b"{}," * 1_300_000 + b"{}]}"
    with HealthProbe(serve.url) as probe:
        response = requests.post(
            serve.url + "/v1/classify", data=body, headers={"Content-Type": "application/json"}, timeout=120
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["field"] == "items"
    assert "1300001 items" in error["message"]
    assert not probe.failures and probe.latencies


def test_a_body_over_the_limit_is_refused_before_it_is_read(serve: Serve) -> None:
    assert serve.url is not None
    body = b'{"items":[{"text":"' + b"a" * (5 * 1024 * 1024) + b'","labels":["x"]}]}'
    response = requests.post(
        serve.url + "/v1/classify", data=body, headers={"Content-Type": "application/json"}, timeout=120
    )
    assert response.status_code == 413
    assert requests.get(serve.url + "/healthz", timeout=10).status_code == 200


def test_a_newline_flood_line_by_line_stays_an_empty_stream(serve: Serve) -> None:
    assert serve.url is not None
    response = requests.post(
        serve.url + "/v1/classify/stream",
        data=b"\n \r\n" * 1_000_000,
        headers={"Content-Type": "application/x-ndjson"},
        timeout=120,
    )
    assert response.status_code == 200 and response.text == ""


def test_serve_still_classifies_after_all_of_it(serve: Serve, tmp_path: Path) -> None:
    assert serve.url is not None
    response = requests.post(
        serve.url + "/v1/classify", json={"items": items(2, "charged twice")}, timeout=120
    )
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == ["i0", "i1"]
