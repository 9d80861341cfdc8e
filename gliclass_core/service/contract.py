"""`ClassifyService`: the typed front door every edge (gRPC, HTTP, Kafka) talks to.

The runtime implements it (`gliclass_core.runtime.Runtime`); an edge decodes its wire format into
`ItemRequest`s, resolves them (`gliclass_core.service.request`), calls `classify` or `submit` with
the call's `CallContext`, and encodes the outcomes. Deadlines and cancellation are enforced behind
this door (`gliclass_core.service.calls`), not in each edge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Protocol, runtime_checkable

from opentelemetry.trace import SpanContext

from gliclass_core.config import LabelSet
from gliclass_core.runtime.calls import CallContext, ItemOutcome
from gliclass_core.runtime.sessions.service import SessionService
from gliclass_core.runtime.stats import SchedulerStats
from gliclass_core.types import ClassifyItem, ModelInfo, Prediction


@runtime_checkable
class ClassifyService(Protocol):
    """The shared model pool as the edges see it."""

    @property
    def ready(self) -> bool:
        """True while every replica is warm and the service accepts work."""
        ...

    @property
    def error(self) -> BaseException | None:
        """Why the service failed (loading, a replica that gave up), if it did."""
        ...

    @property
    def info(self) -> ModelInfo:
        """What is loaded (NotReady before the model is)."""
        ...

    @property
    def label_sets(self) -> Mapping[str, LabelSet]:
        """The configured label sets items may name."""
        ...

    def set_label_sets(self, label_sets: Mapping[str, LabelSet]) -> None:
        """Serve these label sets from the next call on (a reload)."""
        ...

    @property
    def max_queue(self) -> int:
        """How many passes the queue holds at most."""
        ...

    @property
    def bulk_limit(self) -> int:
        """How many passes bulk (Kafka) items may hold at most; the rest is kept for interactive calls."""
        ...

    @property
    def sessions(self) -> SessionService:
        """Streaming sessions (`supported` only for decoder-kv models)."""
        ...

    def stats(self) -> SchedulerStats:
        """A snapshot of the scheduler's counters and queue depths."""
        ...

    def submit(
        self,
        items: Sequence[ClassifyItem],
        context: CallContext,
        *,
        span_contexts: Sequence[SpanContext | None] | None = None,
    ) -> list[Future[Prediction]]:
        """Queue resolved items; one future per item (raises Overloaded / NotReady / InvalidInput).

        `span_contexts`, one per item, are what each item's batch span links to (default: the caller's).
        """
        ...

    async def submit_async(
        self, items: Sequence[ClassifyItem], context: CallContext
    ) -> list[Future[Prediction]]:
        """`submit` for an event loop (a large call is planned off the loop)."""
        ...

    async def classify(self, items: Sequence[ClassifyItem], context: CallContext) -> list[ItemOutcome]:
        """Submit and await every item, honouring the context's deadline and cancellation."""
        ...
