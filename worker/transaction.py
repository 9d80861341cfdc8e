"""Exactly-once commits: the open transaction, what it holds, and librdkafka's rules for its errors.

librdkafka's transactional API sorts every error into one of three kinds (rdkafka.h, "Transactional
producer API"):

- retriable (`KafkaError.retriable()`): the call may be repeated as is (a commit that timed out
  keeps committing in the background; calling `commit_transaction` again resumes it);
- abortable (`KafkaError.txn_requires_abort()`): the transaction cannot commit; call
  `abort_transaction`, rewind the consumer to the last committed offsets and start over;
- fatal (`KafkaError.fatal()`): the producer is unusable; the process must stop (a restart with
  the same transactional id fences this instance and aborts what it left open).

A fenced producer (a newer instance with the same transactional id) is treated as fatal even
where librdkafka reports it as abortable: retrying or aborting cannot help, and two instances
with one id must not both write.

An abort that keeps timing out (a broker that cannot bump the producer epoch after timed-out
deliveries, as tansu) is finished the way a restart would finish it: a new producer with the same
transactional id runs `init_transactions`, which fences the old one and aborts its transaction.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException

from worker.codec import Headers
from worker.config import KafkaConfig
from worker.consumer import TP, Clients, OutputProducer
from worker.delivery import OffsetTracker
from worker.state import WorkerStats

log = logging.getLogger("gliclass.worker")

#: Names the transaction in a header of every record it writes, so duplicates on a broker that
#: shows aborted records to read_committed consumers (tansu 0.6) can be traced to it.
TXN_HEADER = "gliclass.txn"
FENCED = frozenset({KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH, KafkaError._FENCED})
ABORT_ATTEMPTS = 2
ABORT_TIMEOUT_S = 5.0


def must_stop(err: KafkaError) -> bool:
    """True for errors after which this producer must not write again (fatal, or fenced)."""
    return bool(err.fatal()) or err.code() in FENCED


class TransactionalCommitter:
    """The exactly-once `Committer` (commit.py): never commits outputs without their offsets.

    A record is acknowledged once it is queued inside the open transaction; a refused produce or
    a failed delivery fails the transaction, which is then aborted and every partition re-read
    from `rewind_to` (`rewind`). `written` holds, per input partition, one past the last input
    offset whose output or dead letter is in the open transaction. A commit sends the consumed
    offsets with it; when those do not cover `written` (the offset tracker lost a partition, e.g.
    on a crash or a rebalance), the transaction is aborted instead, so its records are read and
    written again, once.
    """

    def __init__(
        self,
        config: KafkaConfig,
        clients: Clients,
        tracker: OffsetTracker,
        stats: WorkerStats,
        rewind_to: dict[TP, int | None],
        rewind: Callable[[], None],
        instance: str | None = None,
    ) -> None:
        self.config, self.clients, self.tracker, self.stats = config, clients, tracker, stats
        self.rewind_to, self.rewind = rewind_to, rewind
        self.instance = instance or uuid.uuid4().hex[:12]
        self.seq = 0
        self.written: dict[TP, int] = {}
        self.failed: KafkaError | None = None
        self.commit_pending = False
        self.last_commit = time.monotonic()

    @property
    def name(self) -> str:
        """The open transaction's name (the `gliclass.txn` header of its records)."""
        return f"{self.instance}-{self.seq}"

    def new_producer(self) -> OutputProducer:
        producer = OutputProducer(self.config.producer_settings(), transactional=True)
        producer.init_transactions()  # fences an older producer with the same transactional id
        return producer

    def can_send(self) -> bool:
        """False while the transaction has failed (it is aborted next) or its commit is being retried."""
        return self.failed is None and not self.commit_pending

    def stamp(self, headers: Headers) -> Headers | None:
        """Open a transaction unless one is open; add its name to the headers (None: it failed to begin)."""
        producer = self.clients.producer
        if not producer.in_transaction:
            try:
                producer.begin()
            except KafkaException as exc:
                self.fail(exc.args[0])
                return None  # aborted on this step
            self.seq += 1
        return [*headers, (TXN_HEADER, self.name.encode())]

    def queued(self, tp: TP, offset: int) -> bool:
        # Inside a transaction the output and the offset commit atomically: queued = acknowledged.
        self.written[tp] = max(self.written.get(tp, 0), offset + 1)
        self.tracker.ack(tp, offset)
        return True

    def skip(self, tp: TP, offset: int) -> bool:
        # The offset commits with the open transaction (opened here if need be, so that a run of
        # records that write nothing still commits).
        if self.stamp([]) is None:
            return False
        self.queued(tp, offset)
        return True

    def delivered(self, err: KafkaError | None) -> bool:
        if err is None:
            self.stats.delivered += 1
        elif self.failed is None:  # one line per transaction, not one per record
            log.warning("delivery failed inside transaction %s (it will abort): %s", self.name, err)
            self.fail(err)
        return True

    def refused(self, err: KafkaError) -> bool:
        # Any refusal inside a transaction (librdkafka answers _STATE once the transaction is in
        # an abortable state) fails the whole transaction: abort and re-read, never skip.
        self.fail(err)
        return True

    def producer_failed(self, err: KafkaError | None) -> None:
        # Fenced or broken inside a transaction: only a restart (which re-reads from the last
        # committed transaction) keeps exactly-once.
        raise KafkaException(err)

    def fail(self, err: KafkaError) -> None:
        """Mark the open transaction failed (a refused produce or a failed delivery): it will abort."""
        if self.failed is None:
            self.failed = err

    def step(self) -> None:
        if self.failed is not None:
            self.abort(self.failed)  # at once: nothing more can be written into it
        interval = self.config.retry_backoff_ms if self.commit_pending else self.config.commit_interval_ms
        if time.monotonic() - self.last_commit >= interval / 1000:
            self.commit()

    def commit(self, wait: bool = False) -> None:
        self.last_commit = time.monotonic()
        self.commit_open()

    def revoke(self, tps: list[TP]) -> None:
        self.commit_open()  # the transaction holds other partitions' outputs too: all or nothing

    def lost(self, tps: list[TP]) -> None:
        if self.clients.producer.in_transaction:
            self.abort(f"partitions lost: {tps}")  # it may hold outputs of the lost partitions

    def commit_open(self) -> None:
        """Commit the open transaction with its offsets; retry, abort or stop as librdkafka prescribes."""
        producer = self.clients.producer
        if self.failed is not None:
            self.abort(self.failed)
            return
        if not producer.in_transaction:
            return
        positions = self.tracker.positions(list(self.written))
        uncovered = sorted(tp for tp, end in self.written.items() if positions.get(tp, -1) < end)
        if uncovered:
            self.abort(f"the offsets of {uncovered} are not tracked any more")
            return
        offsets = self.tracker.committable()
        try:
            producer.commit_transaction(offsets, self.clients.consumer.group_metadata())
        except KafkaException as exc:
            err = exc.args[0]
            if must_stop(err):
                raise
            if err.txn_requires_abort():
                self.abort(err)
                return
            if err.retriable():
                # Nothing more is written into it meanwhile (can_send is False): the retry commits
                # exactly these records and offsets.
                log.warning("transaction %s: commit will be retried: %s", self.name, err)
                self.commit_pending = True
                self.stats.commit_retries += 1
                return
            raise
        self.commit_pending = False
        self.written.clear()
        self.tracker.mark_committed(offsets)
        for tp, offset in offsets.items():
            self.rewind_to[tp] = offset
        self.stats.transactions += 1

    def abort(self, reason: KafkaError | str) -> None:
        """Abort the open transaction and rewind every partition to its last committed offset."""
        if isinstance(reason, KafkaError) and must_stop(reason):
            raise KafkaException(reason)
        log.warning(
            "transaction %s: aborting (%s); re-reading from the last committed offsets", self.name, reason
        )
        producer = self.clients.producer
        for attempt in range(ABORT_ATTEMPTS):
            if not producer.in_transaction:
                break
            try:
                producer.abort_transaction(ABORT_TIMEOUT_S)
            except KafkaException as exc:
                err = exc.args[0]
                if must_stop(err) or not err.retriable():
                    raise
                if attempt == ABORT_ATTEMPTS - 1:
                    self.reinitialize(err)
                else:
                    log.warning("transaction %s: abort will be retried: %s", self.name, err)
        self.failed, self.commit_pending = None, False
        self.written.clear()
        self.stats.aborts += 1
        self.rewind()

    def reinitialize(self, err: KafkaError) -> None:
        """Replace the producer by a new one with the same transactional id (aborts what is open)."""
        log.warning("transaction %s: abort did not finish (%s); re-initialising the producer", self.name, err)
        old = self.clients.producer
        old.purge()
        fresh = self.new_producer()  # fences `old`; the coordinator aborts its open transaction
        fresh.remember_partitions(old.forget_partitions())
        self.clients.producer = fresh
        self.stats.producer_restarts += 1

    def close(self) -> None:
        """On close without a drain (the loop stopped on an error): abort, never commit what is open."""
        producer = self.clients.producer
        if not producer.in_transaction:
            return
        try:
            producer.abort_transaction(2.0)
        except KafkaException as exc:
            # The broker aborts it after transaction.timeout.ms, or the next instance fences it.
            log.warning("transaction %s: abort on close failed: %s", self.name, exc)
        # Never committed from here on: the consumer's revoke callback on close finds nothing open.
        producer.in_transaction = False
        self.written.clear()
        self.stats.aborts += 1
