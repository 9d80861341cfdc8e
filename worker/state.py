"""What the loop's parts share: each consumed record's `Slot` and the `WorkerStats` counters."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

from gliclass_core.types import ClassifyItem, Prediction
from worker.codec import BadEvent, Event, Source
from worker.config import Route
from worker.consumer import TP


@dataclass(eq=False)
class Slot:
    """One consumed record on its way to an output or dead-letter record."""

    tp: TP
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    route: Route
    received: float
    event: Event | None = None
    label_set: str | None = None
    item: ClassifyItem | None = None
    future: Future[Prediction] | None = None
    bad: BadEvent | None = None
    attempts: int = 0
    sends: int = 0  # times produced; a delivery report for an earlier copy is ignored
    in_flight: bool = False  # produced, delivery report not yet served (at-least-once)
    failed: bool = False  # its delivery failed; it is re-sent in order

    @property
    def source(self) -> Source:
        return Source(self.tp[0], self.tp[1], self.offset)

    def ready(self) -> bool:
        return self.bad is not None or (self.future is not None and self.future.done())


@dataclass
class WorkerStats:
    """Counters since start (read from other threads; each is written by the loop thread only)."""

    consumed: int = 0
    scored: int = 0
    dead_lettered: int = 0
    delivered: int = 0
    delivery_retries: int = 0
    resent: int = 0
    commits: int = 0
    transactions: int = 0
    aborts: int = 0
    commit_retries: int = 0
    pauses: int = 0
    producer_restarts: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    #: Predicted labels counted per route (its input topic): the console's label distribution.
    predicted_labels: dict[str, dict[str, int]] = field(default_factory=dict)
