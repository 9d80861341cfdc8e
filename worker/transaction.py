"""The exactly-once loop's open transaction: what it holds, and librdkafka's rules for its errors.

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
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException

from worker.consumer import TP, OutputProducer

if TYPE_CHECKING:
    from worker.loop import WorkerLoop

log = logging.getLogger("gliclass.worker")

FENCED = frozenset({KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH, KafkaError._FENCED})
ABORT_ATTEMPTS = 2
ABORT_TIMEOUT_S = 5.0


def must_stop(err: KafkaError) -> bool:
    """True for errors after which this producer must not write again (fatal, or fenced)."""
    return bool(err.fatal()) or err.code() in FENCED


class Transaction:
    """Begin, commit and abort the loop's transactions; never commits outputs without their offsets.

    `written` holds, per input partition, one past the last input offset whose output or dead
    letter is in the open transaction. A commit sends the consumed offsets with it; when those
    do not cover `written` (the offset tracker lost a partition, e.g. on a crash or a rebalance),
    the transaction is aborted instead, so its records are read and written again, once.
    """

    def __init__(self, loop: WorkerLoop, instance: str) -> None:
        self.loop = loop
        self.instance = instance
        self.seq = 0
        self.written: dict[TP, int] = {}
        self.failed: KafkaError | None = None
        self.commit_pending = False

    @property
    def name(self) -> str:
        """The open transaction's name (the `gliclass.txn` header of its records)."""
        return f"{self.instance}-{self.seq}"

    def can_send(self) -> bool:
        """False while the transaction has failed (it is aborted next) or its commit is being retried."""
        return self.failed is None and not self.commit_pending

    def ensure_open(self) -> str | None:
        """Begin a transaction unless one is open; return its name (None: it failed to begin)."""
        producer = self.loop.producer
        if not producer.in_transaction:
            try:
                producer.begin()
            except KafkaException as exc:
                self.fail(exc.args[0])
                return None
            self.seq += 1
        return self.name

    def wrote(self, tp: TP, offset: int) -> None:
        self.written[tp] = max(self.written.get(tp, 0), offset + 1)

    def fail(self, err: KafkaError) -> None:
        """Mark the open transaction failed (a refused produce or a failed delivery): it will abort."""
        if self.failed is None:
            self.failed = err

    def commit(self) -> None:
        """Commit the open transaction with its offsets; retry, abort or stop as librdkafka prescribes."""
        loop, producer = self.loop, self.loop.producer
        if self.failed is not None:
            self.abort(self.failed)
            return
        if not producer.in_transaction:
            return
        positions = loop.tracker.positions(list(self.written))
        uncovered = sorted(tp for tp, end in self.written.items() if positions.get(tp, -1) < end)
        if uncovered:
            self.abort(f"the offsets of {uncovered} are not tracked any more")
            return
        offsets = loop.tracker.committable()
        try:
            producer.commit_transaction(offsets, loop.consumer.group_metadata())
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
                loop.stats.commit_retries += 1
                return
            raise
        self.commit_pending = False
        self.written.clear()
        loop.tracker.mark_committed(offsets)
        for tp, offset in offsets.items():
            loop.rewind_to[tp] = offset
        loop.stats.transactions += 1

    def abort(self, reason: KafkaError | str) -> None:
        """Abort the open transaction and rewind every partition to its last committed offset."""
        if isinstance(reason, KafkaError) and must_stop(reason):
            raise KafkaException(reason)
        loop, producer = self.loop, self.loop.producer
        log.warning(
            "transaction %s: aborting (%s); re-reading from the last committed offsets", self.name, reason
        )
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
        loop.stats.aborts += 1
        loop.rewind()

    def reinitialize(self, err: KafkaError) -> None:
        """Replace the producer by a new one with the same transactional id (aborts what is open)."""
        log.warning("transaction %s: abort did not finish (%s); re-initialising the producer", self.name, err)
        old = self.loop.producer
        old.purge()
        fresh = OutputProducer(self.loop.config.producer_settings(), transactional=True)
        fresh.init_transactions()  # fences `old`; the coordinator aborts its open transaction
        fresh.remember_partitions(old.forget_partitions())
        self.loop.producer = fresh
        self.loop.stats.producer_restarts += 1

    def abandon(self) -> None:
        """On close without a drain (the loop stopped on an error): abort, never commit what is open."""
        producer = self.loop.producer
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
        self.loop.stats.aborts += 1
