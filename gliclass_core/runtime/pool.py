"""The replica pool: which devices, how many model copies, and loading them in the background.

A runtime thread that stops for good after repeated faults (a replica, or the scheduler's intake
thread: see `supervision`) takes the whole pool out of ready: `error` says why, the scheduler
closes and fails what is queued with NotReady, so no caller waits forever, health goes
NOT_SERVING and the process exits non-zero to be restarted.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from gliclass_core.config import ModelConfig
from gliclass_core.devices import resolve_devices
from gliclass_core.errors import NotReady
from gliclass_core.model import Model
from gliclass_core.runtime.replica import Replica
from gliclass_core.runtime.scheduler import Scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaSpec:
    """Where one replica runs."""

    name: str
    device: str


def plan_replicas(devices: list[str], replicas_per_device: int) -> list[ReplicaSpec]:
    """One spec per model copy: `replicas_per_device` on each device."""
    return [
        ReplicaSpec(f"{device.replace(':', '')}-r{copy}", device)
        for device in devices
        for copy in range(replicas_per_device)
    ]


class Pool:
    """Model copies on their devices; loads them in background threads and reports readiness."""

    def __init__(
        self,
        model: ModelConfig,
        scheduler: Scheduler,
        *,
        loader: Callable[[str], Model] | None = None,
    ) -> None:
        self.model = model
        self.scheduler = scheduler
        self.devices = resolve_devices(model.device, model.engine)
        self.specs = plan_replicas(self.devices, model.replicas_per_device)
        self.replicas: list[Replica] = []
        self._loader_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.classifier: Model | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.failed = threading.Event()
        self._loader = loader or self._load_base
        self._lock = threading.Lock()
        self._pending = len(self.specs)
        scheduler.on_thread_stopped(self._thread_stopped)

    def _load_base(self, device: str) -> Model:
        from gliclass_core.classifier import Classifier

        kwargs = {"max_length": self.model.max_length} if self.model.max_length else {}
        return Classifier.from_pretrained(
            self.model.id, device=device, dtype=self.model.dtype, engine=self.model.engine, **kwargs
        )

    def cpu_threads_per_replica(self) -> int | None:
        """Split `cpu_threads` (default: torch's count) evenly over the CPU replicas."""
        import torch

        cpu_replicas = sum(spec.device == "cpu" for spec in self.specs)
        if not cpu_replicas:
            return None
        total = self.model.cpu_threads or (torch.get_num_threads() if cpu_replicas > 1 else None)
        return max(1, total // cpu_replicas) if total else None

    def start(self, on_ready: Callable[[Pool], None] | None = None) -> None:
        """Load the base model, then each replica loads its copy and warms up on its own thread."""
        self._loader_thread = threading.Thread(
            target=self._start, args=(on_ready,), name="gliclass-pool-loader", daemon=True
        )
        self._loader_thread.start()

    def _start(self, on_ready: Callable[[Pool], None] | None) -> None:
        import torch

        threads = self.cpu_threads_per_replica()
        if threads:
            torch.set_num_threads(threads)  # process-wide; each CPU replica sets it again on its thread
        try:
            base = self._loader(self.specs[0].device)
        except BaseException as exc:
            log.exception("loading model %s failed", self.model.id)
            self._fail(exc)
            return
        self.classifier = base
        if self._stopping.is_set():
            return  # stopped while loading: no replica to start

        def report(replica: Replica, exc: BaseException | None) -> None:
            if exc is not None:
                self._fail(exc)
                return
            with self._lock:
                self._pending -= 1
                done = self._pending == 0
            if done and not self.failed.is_set():
                if on_ready is not None:
                    on_ready(self)
                self.ready.set()

        for index, spec in enumerate(self.specs):
            load: Callable[[], Model] = (
                (lambda: base) if index == 0 else functools.partial(base.replicate, spec.device)
            )
            replica = Replica(spec.name, spec.device, self.scheduler, load, cpu_threads=threads, index=index)
            self.replicas.append(replica)
            replica.start(report, self._replica_stopped)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.failed.set()

    def _replica_stopped(self, replica: Replica, exc: BaseException) -> None:
        self._thread_stopped(f"replica {replica.name} on {replica.device}", replica.faults, exc)

    def _thread_stopped(self, thread: str, faults: int, exc: BaseException) -> None:
        """A runtime thread gave up after `faults` faults: out of ready, fail what is queued."""
        error = NotReady(
            f"{thread} stopped after {faults} faults "
            f"({type(exc).__name__}: {exc}); the pool is out of service"
        )
        error.__cause__ = exc.with_traceback(None)
        log.error("%s", error)
        self._fail(error)
        self.ready.clear()
        failed = self.scheduler.close(0.0, drain=False)
        log.error("the pool stopped: failed %d queued items", failed)

    def join(self, timeout: float) -> bool:
        """Wait for the loader and every replica thread to end (after the scheduler closed); True when
        all did.

        A stop that comes while the model loads waits for the load (up to `timeout`): a process that
        exits while a thread is inside torch's native code aborts ("terminate called without an
        active exception") instead of exiting with its own code.
        """
        self._stopping.set()
        loader = self._loader_thread
        if loader is not None:
            loader.join(timeout)
            if loader.is_alive():
                return False
        return all(replica.join(timeout) for replica in list(self.replicas))
