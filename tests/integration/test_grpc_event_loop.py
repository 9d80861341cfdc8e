"""A Classify call whose items are tokenized while it is planned keeps the server's event loop free.

`Scheduler.submit` plans on the caller's thread; for most items planning is cheap (the intake
thread tokenizes), but `long_text = "chunk"` items (and encoder-decoder rows) are tokenized while
they are planned: a 4 MB request of them is a second or more of CPU. Real server, real runtime
and model; to hold the planning at a known point, the model's `plan` is wrapped to wait on a gate
first (a real tokenizer cannot be paused), and the test checks that the server still answers
another call meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from fixtures.grpc import ServerThread, builtin_classifier, grpc_app_config
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gliclass_core.runtime import Runtime
from gliclass_core.types import ClassifyItem, ItemPlan
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc

GATED = "Gated ticket:"
# Six chunked items of ~3,900 characters: above the 20,000 characters planned on the loop.
TEXT = GATED + " my card was charged twice and the app crashed." * 80
SERVING = health_pb2.HealthCheckResponse.SERVING
CHUNKED = {"long_text": "chunk", "text_chunk_size": 400, "text_chunk_overlap": 20}


class GatedPlan:
    """The real model; `plan` of a gated item records its thread, then waits for `gate`."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.threads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def plan(self, item: ClassifyItem, index: int | None = None) -> ItemPlan:
        if item.text.startswith(GATED):
            self.threads.append(threading.current_thread().name)
            self.entered.set()
            assert self.gate.wait(60)
        return self._real.plan(item, index)  # type: ignore[no-any-return]


@pytest.fixture
def gated_server() -> Iterator[tuple[ServerThread, GatedPlan]]:
    wrapper = GatedPlan(builtin_classifier())
    runtime = Runtime.from_config(grpc_app_config(), loader=lambda device: wrapper)
    runtime.start()
    assert runtime.wait_ready(timeout=120), runtime.error
    server = ServerThread(runtime)
    try:
        yield server, wrapper
    finally:
        wrapper.gate.set()
        server.close()
        runtime.stop(grace_s=1)


def wait_serving(health: Any) -> None:
    deadline = time.monotonic() + 30
    while health.Check(health_pb2.HealthCheckRequest(service="")).status != SERVING:
        assert time.monotonic() < deadline, "the server never turned SERVING"
        time.sleep(0.05)


def test_a_large_chunked_classify_is_planned_off_the_event_loop(
    gated_server: tuple[ServerThread, GatedPlan],
) -> None:
    server, wrapper = gated_server
    items = [pb.Item(id=str(i), text=TEXT, labels=["billing", "bug report"], **CHUNKED) for i in range(6)]
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        wait_serving(health)
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        classify = stub.Classify.future(pb.ClassifyRequest(items=items))
        try:
            assert wrapper.entered.wait(30), "the call was never planned"
            # The planning is held: a loop blocked in it would answer nothing until the gate opens.
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            except grpc.RpcError as exc:
                pytest.fail(f"the server did not answer while a Classify was being planned: {exc.code()}")
            assert answer.status == SERVING
        finally:
            wrapper.gate.set()
        response = classify.result(timeout=120)
    assert [r.id for r in response.results] == [str(i) for i in range(6)]
    assert all(r.text_chunks > 1 for r in response.results)
    assert "grpc-test-server" not in wrapper.threads  # planned on a worker thread, not the loop's
    offline = builtin_classifier().classify([TEXT], ["billing", "bug report"], **CHUNKED)[0]
    assert {s.label: s.score for s in response.results[0].scores} == pytest.approx(offline.scores, abs=1e-5)
