"""Flow control and failure paths: deadlines, cancellation, overload, not-ready, backpressure, drain."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from fixtures.grpc import ServerThread, grpc_app_config, make_runtime
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gliclass_core.errors import Overloaded
from gliclass_core.runtime import Priority
from gliclass_core.types import ClassifyItem
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc

LABELS = ["billing", "bug report", "feature request"]
LONG_TEXT = " ".join(["the invoice total looked wrong after the latest update to the billing page"] * 25)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll until `predicate()` holds; fail (not hang) if it never does."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def dropped(runtime: Any) -> int:
    stats = runtime.stats()
    return stats.expired_items + stats.cancelled_items


def fill_queue(runtime: Any, n: int) -> list[Any]:
    """Queue `n` long items straight into the scheduler so that later calls wait behind them."""
    return runtime.scheduler.submit(
        [ClassifyItem(LONG_TEXT, tuple(LABELS))] * n, priority=Priority.INTERACTIVE
    )


def items(n: int, prefix: str = "i") -> list[Any]:
    return [
        pb.Item(id=f"{prefix}{i}", text=f"my card was charged {i} times", labels=LABELS) for i in range(n)
    ]


@pytest.fixture
def filler(grpc_runtime: Any) -> Iterator[Callable[[int], list[Any]]]:
    made: list[Any] = []

    def fill(n: int) -> list[Any]:
        made.extend(fill_queue(grpc_runtime, n))
        return made

    yield fill
    for future in made:
        future.cancel()


def test_deadline_fails_the_call_and_drops_its_queued_items(
    classifier_stub: Any, grpc_runtime: Any, filler: Any
) -> None:
    filler(150)
    before = dropped(grpc_runtime)
    with pytest.raises(grpc.RpcError) as info:
        classifier_stub.Classify(pb.ClassifyRequest(items=items(8)), timeout=0.3)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    # Expired by the scheduler or cancelled with the call: either way never computed.
    wait_for(lambda: dropped(grpc_runtime) >= before + 8, what="the call's 8 items to be dropped")


def test_cancelled_call_drops_its_queued_items(classifier_stub: Any, grpc_runtime: Any, filler: Any) -> None:
    filler(150)
    before_submitted = grpc_runtime.stats().submitted_items
    before = dropped(grpc_runtime)
    call = classifier_stub.Classify.future(pb.ClassifyRequest(items=items(8)), timeout=60)
    wait_for(
        lambda: grpc_runtime.stats().submitted_items >= before_submitted + 8, what="the items to be queued"
    )
    assert call.cancel()
    with pytest.raises(grpc.FutureCancelledError):
        call.result()
    wait_for(
        lambda: grpc_runtime.stats().cancelled_items + grpc_runtime.stats().expired_items >= before + 8,
        what="the cancelled call's items to leave the queue",
    )


def test_stream_deadline_and_cancel(
    classifier_stub: Any, grpc_runtime: Any, grpc_server: Any, filler: Any
) -> None:
    filler(150)
    responses = classifier_stub.ClassifyStream(iter([pb.ClassifyStreamRequest(items=items(4))]), timeout=0.3)
    with pytest.raises(grpc.RpcError) as info:
        list(responses)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

    before = dropped(grpc_runtime)
    stop = threading.Event()

    def requests() -> Iterator[Any]:
        yield pb.ClassifyStreamRequest(items=items(3))
        stop.wait(30)

    submitted = grpc_runtime.stats().submitted_items
    call = classifier_stub.ClassifyStream(requests(), timeout=60)
    wait_for(
        lambda: grpc_runtime.stats().submitted_items >= submitted + 3, what="the stream's items to be queued"
    )
    call.cancel()
    stop.set()
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() is grpc.StatusCode.CANCELLED
    wait_for(lambda: dropped(grpc_runtime) >= before + 3, what="the stream's queued items to be dropped")
    wait_for(lambda: grpc_server.servicer.stats.streams_open == 0, what="the stream handler to finish")


def test_slow_reader_makes_the_server_stop_reading(grpc_server: Any) -> None:
    # BDP probing lets the client's transport grow its receive window towards megabytes while
    # nobody reads; with it off the window stays at HTTP/2's initial 64 KiB, so how much the server
    # may write ahead of the reader no longer depends on the machine's timing.
    channel = grpc_server.channel(options=[("grpc.http2.bdp_probe", 0)])
    classifier_stub = classifier_pb2_grpc.ClassifierStub(channel)
    stats = grpc_server.servicer.stats
    before = stats.items_received
    total = 3000
    labels = [f"a fairly long candidate label number {i}" for i in range(12)]

    def requests() -> Iterator[Any]:
        for i in range(total):
            yield pb.ClassifyStreamRequest(items=[pb.Item(id=str(i), text=f"text {i}", labels=labels)])

    call = classifier_stub.ClassifyStream(requests(), timeout=120)  # never read
    try:
        wait_for(lambda: stats.items_received > before, what="the server to start reading")
        # Wait until the server has stopped taking items in (no change for a second).
        last, still_since = stats.items_received, time.monotonic()
        while time.monotonic() - still_since < 1.0:
            time.sleep(0.1)
            if stats.items_received != last:
                last, still_since = stats.items_received, time.monotonic()
        received = stats.items_received - before
        print(f"server read {received} of {total} items while the client read none")
        # In flight (4) plus what fits in the transport's flow-control windows, not the whole stream.
        assert received < total / 2, f"the server read {received} of {total} items from a stream nobody reads"
        first = next(call)  # reading resumes the stream, in order
        assert first.result.id == "0"
    finally:
        call.cancel()
        channel.close()


def top_up(runtime: Any, made: list[Any]) -> None:
    """Submit single long items until the scheduler says its queue is full."""
    while True:
        try:
            made.extend(fill_queue(runtime, 1))
        except Overloaded:
            return


def test_full_queue_is_resource_exhausted() -> None:
    # A second runtime with a tiny queue and one-item batches (so it drains slowly), sharing the model.
    runtime = make_runtime(grpc_app_config(max_queue=16, max_batch_size=1))
    server = ServerThread(runtime)
    filler: list[Any] = []
    try:
        with server.channel() as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            top_up(runtime, filler)
            with pytest.raises(grpc.RpcError) as info:
                stub.Classify(pb.ClassifyRequest(items=items(8)), timeout=30)
            assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "queue full" in info.value.details()
            # In a stream each item is submitted alone: those that do not fit fail alone.
            top_up(runtime, filler)
            responses = list(
                stub.ClassifyStream(iter([pb.ClassifyStreamRequest(items=items(8))]), timeout=60)
            )
            statuses = [r.result.error.status for r in responses]
            assert [r.result.id for r in responses] == [f"i{i}" for i in range(8)]
            assert "RESOURCE_EXHAUSTED" in statuses and set(statuses) <= {"RESOURCE_EXHAUSTED", ""}
    finally:
        for future in filler:
            future.cancel()
        server.close()
        runtime.stop(grace_s=1)


def test_not_ready_until_warm_then_serving() -> None:
    runtime = make_runtime(grpc_app_config(), start=False)
    server = ServerThread(runtime)
    try:
        with server.channel() as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == NOT_SERVING
            for call in (
                lambda: stub.Classify(pb.ClassifyRequest(items=items(1)), timeout=10),
                lambda: stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10),
            ):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() is grpc.StatusCode.UNAVAILABLE
            (response,) = list(
                stub.ClassifyStream(iter([pb.ClassifyStreamRequest(items=items(1))]), timeout=10)
            )
            assert response.result.error.status == "UNAVAILABLE"
            # Config-only answers work before the model is loaded.
            assert len(stub.ListLabelSets(pb.ListLabelSetsRequest(), timeout=10).label_sets) == 2

            watch = health.Watch(health_pb2.HealthCheckRequest(service="gliclass.v1.Classifier"), timeout=120)
            assert next(watch).status == NOT_SERVING
            runtime.start()
            assert next(watch).status == SERVING
            watch.cancel()
            assert len(stub.Classify(pb.ClassifyRequest(items=items(2)), timeout=30).results) == 2
    finally:
        server.close()
        runtime.stop(grace_s=1)


def test_shutdown_goes_not_serving_and_finishes_in_flight_calls(grpc_runtime: Any) -> None:
    server = ServerThread(grpc_runtime)
    closed = False
    try:
        with server.channel() as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=60)
            assert next(watch).status == SERVING
            before = grpc_runtime.stats().submitted_items
            in_flight = stub.Classify.future(pb.ClassifyRequest(items=items(32)), timeout=60)
            wait_for(
                lambda: grpc_runtime.stats().submitted_items >= before + 32, what="the call to be queued"
            )
            stopping = server.submit(server.server.stop(grace=30))
            assert next(watch).status == NOT_SERVING
            assert list(watch) == []  # the watch ends, so it does not hold the shutdown for its grace
            assert len(in_flight.result(timeout=60).results) == 32
            stopping.result(timeout=60)
            with pytest.raises(grpc.RpcError) as info:
                stub.Classify(pb.ClassifyRequest(items=items(1)), timeout=5)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        server.close()
        closed = True
    finally:
        if not closed:
            server.close()
