"""The shared model pool and micro-batching scheduler (see `Runtime`)."""

from __future__ import annotations

from gliclass_core.devices import resolve_devices
from gliclass_core.runtime.batch_forming import (
    BatchDecision,
    BatchPolicy,
    PendingPass,
    Priority,
    QueueState,
    form_batch,
)
from gliclass_core.runtime.bridge import gather_futures
from gliclass_core.runtime.pool import Pool
from gliclass_core.runtime.runtime import Runtime
from gliclass_core.runtime.scheduler import Scheduler
from gliclass_core.runtime.stats import Histogram, SchedulerStats
from gliclass_core.runtime.work import Batch, TimedFuture

__all__ = [
    "Batch",
    "BatchDecision",
    "BatchPolicy",
    "Histogram",
    "PendingPass",
    "Pool",
    "Priority",
    "QueueState",
    "Runtime",
    "Scheduler",
    "SchedulerStats",
    "TimedFuture",
    "form_batch",
    "gather_futures",
    "resolve_devices",
]
