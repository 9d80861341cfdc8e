"""Device resolution and replica planning for the pool (no model loaded)."""

from __future__ import annotations

import threading

import pytest
import torch

from gliclass_core.config import ConfigError, ModelConfig
from gliclass_core.devices import resolve_devices
from gliclass_core.runtime.batch_forming import BatchPolicy
from gliclass_core.runtime.pool import Pool, plan_replicas
from gliclass_core.runtime.scheduler import Scheduler


def test_auto_is_every_gpu_else_cpu():
    expected = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    assert resolve_devices("auto") == (expected or ["cpu"])


def test_explicit_lists():
    assert resolve_devices("cpu") == ["cpu"]
    assert resolve_devices(" CPU ") == ["cpu"]


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "", "tpu:0"])
def test_unknown_devices_are_config_errors(spec: str):
    with pytest.raises(ConfigError, match="device"):
        resolve_devices(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_absent_gpu_is_named():
    with pytest.raises(ConfigError, match="'cuda:0' is not available"):
        resolve_devices("cuda:0,cuda:1")


def test_duplicate_devices_are_rejected():
    with pytest.raises(ConfigError, match="twice"):
        resolve_devices("cpu,cpu")


def test_replicas_per_device():
    specs = plan_replicas(["cuda:0", "cuda:1"], 2)
    assert [s.device for s in specs] == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert len({s.name for s in specs}) == 4


def test_cpu_threads_are_split_over_cpu_replicas():
    scheduler = Scheduler(BatchPolicy(), max_queue=10)
    pool = Pool(ModelConfig(device="cpu", replicas_per_device=2, cpu_threads=6), scheduler)
    assert pool.cpu_threads_per_replica() == 3
    assert Pool(ModelConfig(device="cpu", cpu_threads=4), scheduler).cpu_threads_per_replica() == 4
    assert Pool(ModelConfig(device="cpu"), scheduler).cpu_threads_per_replica() is None  # torch's default


def test_a_stop_while_the_model_loads_waits_for_the_load(builtin_classifier):
    # The loader is held at a gate to put the stop inside the load (the model itself is real).
    # A process that exits while the loader thread is inside torch aborts instead of exiting 0.
    gate, entered = threading.Event(), threading.Event()

    def loader(device: str):
        entered.set()
        gate.wait(10)
        return builtin_classifier

    scheduler = Scheduler(BatchPolicy(), max_queue=10)
    pool = Pool(ModelConfig(device="cpu"), scheduler, loader=loader)
    pool.start()
    assert entered.wait(5)
    scheduler.close(0.0)
    joined: list[bool] = []
    stopper = threading.Thread(target=lambda: joined.append(pool.join(10.0)))
    stopper.start()
    stopper.join(0.5)
    assert not joined, "join returned while the model was still loading"
    gate.set()
    stopper.join(10)
    assert joined == [True]
    assert pool.replicas == [], "a stop during the load starts no replica"
