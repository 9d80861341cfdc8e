"""Commits: one interface for both delivery modes, picked once by `committer_for`.

- at-least-once (`OffsetCommitter`): a record is acknowledged by its delivery report (a failed one
  is re-sent in order by `Output`); the acknowledged prefix of each partition is committed through
  the consumer every `commit_interval_ms`.
- exactly-once (`TransactionalCommitter`, transaction.py): a record is acknowledged once it is
  queued inside the open transaction; any failure aborts the transaction and rewinds the
  partitions; the consumed offsets are committed with the transaction.

The loop and the output call only the `Committer` protocol: neither asks which mode runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from confluent_kafka import KafkaError

from worker.codec import Headers
from worker.config import KafkaConfig
from worker.consumer import TP, Clients, OutputProducer
from worker.delivery import OffsetTracker
from worker.state import WorkerStats
from worker.transaction import TransactionalCommitter


class Committer(Protocol):
    """What differs between the delivery modes: when an output counts as acknowledged, how a
    failure is answered, and how acknowledged offsets are committed."""

    config: KafkaConfig
    #: True while a commit is being retried (nothing is sent meanwhile; a drain waits for it).
    commit_pending: bool

    def new_producer(self) -> OutputProducer:
        """Return a producer for this mode, ready to write (transactions initialised where used)."""

    def can_send(self) -> bool:
        """False while nothing may be produced (a failed transaction about to abort, a commit retry)."""

    def stamp(self, headers: Headers) -> Headers | None:
        """Return the headers of a record about to be produced; None when nothing can be written now."""

    def queued(self, tp: TP, offset: int) -> bool:
        """A record was queued. True: that acknowledges it; False: its delivery report will."""

    def delivered(self, err: KafkaError | None) -> bool:
        """Take the delivery report of a record `queued` acknowledged. False: such reports are stale."""

    def skip(self, tp: TP, offset: int) -> bool:
        """Acknowledge a record that writes nothing (its offset is committed as if it had). False: not now."""

    def refused(self, err: KafkaError) -> bool:
        """The producer refused a record. True: answered here; False: the output backs off or
        replaces the producer."""

    def producer_failed(self, err: KafkaError | None) -> None:
        """The producer hit a fatal error; raise where replacing it would break the guarantee."""

    def step(self) -> None:
        """Once per loop iteration: commit when the interval has passed (abort a failed transaction)."""

    def commit(self, wait: bool = False) -> None:
        """Commit what is acknowledged now."""

    def revoke(self, tps: list[TP]) -> None:
        """Commit what the revoked partitions acknowledged, before they are dropped."""

    def lost(self, tps: list[TP]) -> None:
        """The partitions are lost (already dropped): give up what is open and may hold their outputs."""

    def close(self) -> None:
        """On close without a drain: give up, never commit, what is still open."""


class OffsetCommitter:
    """At-least-once: commit each partition's acknowledged prefix through the consumer."""

    commit_pending = False  # a failed offset commit is retried with the next one

    def __init__(
        self, config: KafkaConfig, clients: Clients, tracker: OffsetTracker, stats: WorkerStats
    ) -> None:
        self.config, self.clients, self.tracker, self.stats = config, clients, tracker, stats
        self.last_commit = time.monotonic()

    def new_producer(self) -> OutputProducer:
        return OutputProducer(self.config.producer_settings(), transactional=False)

    def can_send(self) -> bool:
        return True

    def stamp(self, headers: Headers) -> Headers | None:
        return headers

    def queued(self, tp: TP, offset: int) -> bool:
        return False  # acknowledged by its delivery report

    def delivered(self, err: KafkaError | None) -> bool:
        return False  # every record waits for its report: one arriving after that is stale

    def skip(self, tp: TP, offset: int) -> bool:
        self.tracker.ack(tp, offset)
        return True

    def refused(self, err: KafkaError) -> bool:
        return False

    def producer_failed(self, err: KafkaError | None) -> None:
        return None  # a fresh producer re-sends every unacknowledged record

    def step(self) -> None:
        if time.monotonic() - self.last_commit >= self.config.commit_interval_ms / 1000:
            self.commit()

    def commit(self, wait: bool = False, only: list[TP] | None = None) -> None:
        """Commit acknowledged offsets (of the partitions in `only`, when given)."""
        self.last_commit = time.monotonic()
        consumer = self.clients.consumer
        for tp in consumer.failed_commits:
            self.tracker.mark_committed({tp: -1})
        consumer.failed_commits.clear()
        offsets = self.tracker.committable()
        if only is not None:
            offsets = {tp: o for tp, o in offsets.items() if tp in only}
        if offsets and consumer.commit(offsets, wait=wait):
            self.tracker.mark_committed(offsets)
            self.stats.commits += 1

    def revoke(self, tps: list[TP]) -> None:
        self.clients.producer.flush(min(5.0, self.config.revoke_grace_ms / 1000))
        self.commit(wait=True, only=tps)

    def lost(self, tps: list[TP]) -> None:
        return None  # nothing is open: their offsets stay uncommitted and the new owner re-reads

    def close(self) -> None:
        return None


def committer_for(
    config: KafkaConfig,
    clients: Clients,
    tracker: OffsetTracker,
    stats: WorkerStats,
    rewind_to: dict[TP, int | None],
    rewind: Callable[[], None],
) -> Committer:
    """Return the committer of `config.delivery`.

    `rewind_to` (partition -> offset to re-read from) is updated by each transaction's commit;
    `rewind` re-reads every partition from there after an abort.
    """
    if config.exactly_once:
        return TransactionalCommitter(config, clients, tracker, stats, rewind_to, rewind)
    return OffsetCommitter(config, clients, tracker, stats)
