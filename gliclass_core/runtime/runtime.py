"""`Runtime`: the pool and the scheduler built from config, with one lifecycle for the edges."""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future

from opentelemetry.trace import SpanContext

from gliclass_core.config import AppConfig, LabelSet
from gliclass_core.devices import resolve_devices
from gliclass_core.errors import NotReady
from gliclass_core.model import Model
from gliclass_core.runtime.batch_forming import BatchPolicy
from gliclass_core.runtime.calls import CallContext, ItemOutcome, await_outcomes
from gliclass_core.runtime.host_memory import retain_freed_memory
from gliclass_core.runtime.pool import Pool
from gliclass_core.runtime.scheduler import Scheduler
from gliclass_core.runtime.sessions.scheduled import ScheduledSessions
from gliclass_core.runtime.sessions.service import SessionSettings
from gliclass_core.runtime.stats import SchedulerStats
from gliclass_core.types import ClassifyItem, ModelInfo, Prediction

log = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL_S = 0.0005

#: How long a stop waits, at least, for batches already computing and a model still loading.
BATCH_FINISH_S = 30.0

#: On a GPU a forward pass costs about the same for 1 or 32 rows (kernel launches dominate), so
#: fuller batches beat tighter padding, and bulk batches of 8k tokens barely delay interactive ones.
_GPU_POLICY = {"min_padding_efficiency": 0.75, "bulk_tokens_while_interactive": 8192}


class Runtime:
    """One shared model pool and its scheduler: the `ClassifyService` every edge calls."""

    def __init__(
        self, config: AppConfig, pool: Pool, scheduler: Scheduler, *, reserve_interactive: int
    ) -> None:
        self.config = config
        self.pool = pool
        self.scheduler = scheduler
        self._reserve_interactive = reserve_interactive
        self._stopped = threading.Event()
        self._label_sets: Mapping[str, LabelSet] = dict(config.label_sets)
        #: Streaming sessions (decoder-kv models); `supported` is False for other models.
        self.sessions = ScheduledSessions(scheduler, SessionSettings.from_section(config.section("sessions")))

    @classmethod
    def from_config(
        cls,
        config: AppConfig,
        *,
        policy: BatchPolicy | None = None,
        reserve_interactive: int | None = None,
        loader: Callable[[str], Model] | None = None,
    ) -> Runtime:
        """Build pool and scheduler; load nothing yet (see `start`).

        The batch policy comes from `[batching]` (plus GPU-specific trade-offs when the pool has a
        CUDA device) unless `policy` is given.
        `reserve_interactive` replicas stay free for interactive work while it is flowing
        (default: 1 when the pool has 2 or more replicas, else 0). `loader(device)` replaces
        `Classifier.from_pretrained(config.model.id, ...)` (tests, benchmarks).
        """
        if policy is None:
            on_gpu = any(device.startswith("cuda") for device in resolve_devices(config.model.device))
            policy = BatchPolicy.from_config(config.batching, **(_GPU_POLICY if on_gpu else {}))
        scheduler = Scheduler(
            policy, config.batching.max_queue, bulk_queue_share=config.batching.bulk_queue_share
        )
        pool = Pool(config.model, scheduler, loader=loader)
        if reserve_interactive is None:
            reserve_interactive = 1 if len(pool.specs) >= 2 else 0
        return cls(config, pool, scheduler, reserve_interactive=reserve_interactive)

    def start(self) -> None:
        """Load the replicas and warm them up in background threads; returns at once.

        Also shortens the interpreter's GIL switch interval (process-wide) to `GIL_SWITCH_INTERVAL_S`
        unless it is already shorter: a replica thread re-takes the GIL between torch ops, and with
        Python's default 5 ms every op of an interactive forward pass can wait that long behind a
        thread tokenizing bulk input. And keeps freed host memory for reuse (`host_memory`).
        """
        retain_freed_memory()
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.pool.start(on_ready=self._open)

    def _open(self, pool: Pool) -> None:
        assert pool.classifier is not None
        self.sessions.attach([replica.classifier or pool.classifier for replica in pool.replicas])
        self.scheduler.open(
            pool.classifier, replicas=len(pool.replicas), reserved_for_interactive=self._reserve_interactive
        )

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until every replica is warm (True), loading failed or `timeout` passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (self.pool.ready.is_set() or self.pool.failed.is_set()):
            remaining = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if remaining <= 0:
                break
            self.pool.ready.wait(remaining)
        return self.ready

    @property
    def ready(self) -> bool:
        """True once every replica finished its warm-up, until `stop`."""
        return self.pool.ready.is_set() and self.scheduler.accepting and not self._stopped.is_set()

    @property
    def error(self) -> BaseException | None:
        """Why the pool failed (loading, or a replica that stopped after repeated faults), if it did."""
        return self.pool.error

    @property
    def classifier(self) -> Model:
        """The base model (for `prepare`-style validation at the edges); NotReady before load."""
        if self.pool.classifier is None:
            raise NotReady("the model is not loaded yet")
        return self.pool.classifier

    @property
    def info(self) -> ModelInfo:
        """What is loaded; the device field lists every replica's device."""
        info = self.classifier.info
        devices = ",".join(spec.device for spec in self.pool.specs)
        return dataclasses.replace(
            info, device=devices, extra={**info.extra, "replicas": str(len(self.pool.specs))}
        )

    @property
    def label_sets(self) -> Mapping[str, LabelSet]:
        """The label sets items may name: the config's, until a reload replaces them."""
        return self._label_sets

    def set_label_sets(self, label_sets: Mapping[str, LabelSet]) -> None:
        """Serve `label_sets` from the next call on (SIGHUP reload); calls in progress keep theirs."""
        self._label_sets = dict(label_sets)

    @property
    def max_queue(self) -> int:
        return self.scheduler.max_queue

    @property
    def bulk_limit(self) -> int:
        return self.scheduler.bulk_limit

    def stats(self) -> SchedulerStats:
        return self.scheduler.stats()

    def submit(
        self,
        items: Sequence[ClassifyItem],
        context: CallContext,
        *,
        span_contexts: Sequence[SpanContext | None] | None = None,
    ) -> list[Future[Prediction]]:
        """Queue resolved items under the call's priority and deadline; one future per item.

        `span_contexts` (one per item) are what each item's batch span links to (default: the
        caller's span), as `Scheduler.submit` takes them.
        """
        return self.scheduler.submit(items, context.priority, context.deadline, span_contexts=span_contexts)

    async def submit_async(
        self, items: Sequence[ClassifyItem], context: CallContext
    ) -> list[Future[Prediction]]:
        """`submit` for an event loop: a large call is planned in a worker thread."""
        return await self.scheduler.submit_async(items, context.priority, context.deadline)

    async def classify(self, items: Sequence[ClassifyItem], context: CallContext) -> list[ItemOutcome]:
        """Submit and await every item; at the deadline or on cancellation the rest end at once."""
        return await await_outcomes(await self.submit_async(items, context), context)

    def stop(self, grace_s: float = 10.0) -> int:
        """Stop accepting, drain queued work for up to `grace_s`, fail the rest, end the threads.

        Returns how many queued items were failed with NotReady. A batch already computing is let
        finish (up to BATCH_FINISH_S): a process that exits while a replica thread is inside torch
        aborts ("terminate called without an active exception") instead of exiting with its code.
        """
        self._stopped.set()
        self.sessions.shutdown()
        failed = self.scheduler.close(grace_s)
        if not self.pool.join(timeout=max(BATCH_FINISH_S, grace_s)):
            log.warning("model threads still running after the stop; the process may abort at exit")
        return failed
