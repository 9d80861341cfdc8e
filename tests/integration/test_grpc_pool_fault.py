"""gRPC health follows the pool: a replica, or the intake thread, that stops after repeated faults
turns it NOT_SERVING.

The fault has no real cause in a correct program (it is raised outside the batch's guard, after the
real forward pass, or after the real tokenizer ran), so a fault hook on the scheduler's `complete`
(or the intake's queueing of a tokenized round) raises it, as a persistent bug would.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from fixtures.grpc import ServerThread, grpc_app_config, make_runtime
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gliclass_core.runtime import supervision as supervision_module
from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc


@pytest.mark.parametrize("thread", ["replica", "intake"])
def test_health_goes_not_serving_when_the_pool_stops(monkeypatch: pytest.MonkeyPatch, thread: str) -> None:
    runtime = make_runtime(grpc_app_config())
    server = ServerThread(runtime)
    try:
        with server.channel() as channel:
            health = health_pb2_grpc.HealthStub(channel)
            classify = classifier_pb2_grpc.ClassifierStub(channel)

            def status() -> Any:
                return health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status

            deadline = time.monotonic() + 30
            while status() != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            item = pb.Item(text="The app crashes on start", labels=["bug report", "billing"])
            assert classify.Classify(pb.ClassifyRequest(items=[item]), timeout=30).results

            def broken(*args: Any, **kwargs: Any) -> None:  # the fault hook
                raise RuntimeError("injected persistent fault")

            if thread == "replica":
                monkeypatch.setattr(runtime.scheduler, "complete", broken)
            else:
                monkeypatch.setattr(runtime.scheduler._passes, "enqueue_tokenized", broken)
            monkeypatch.setattr(supervision_module, "RESTART_DELAY_S", 0.01)
            codes = set()
            deadline = time.monotonic() + 30
            while status() == health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, "health stayed SERVING while the pool failed every call"
                with pytest.raises(grpc.RpcError) as failed:  # answered, never left waiting
                    classify.Classify(pb.ClassifyRequest(items=[item]), timeout=30)
                codes.add(failed.value.code())
            assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
            assert grpc.StatusCode.DEADLINE_EXCEEDED not in codes
            assert server.server.load_failed.is_set()
            assert "stopped after 5 faults" in str(server.server.load_error) and server.server.was_serving
            assert thread in str(server.server.load_error)
            with pytest.raises(grpc.RpcError) as refused:
                classify.Classify(pb.ClassifyRequest(items=[item]), timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.close()
        runtime.stop(grace_s=1)
