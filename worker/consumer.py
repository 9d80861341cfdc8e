"""Our own verbs around confluent_kafka: the worker loop never calls the client API directly.

Every call here runs on the worker's loop thread (librdkafka callbacks included: rebalance,
delivery and commit callbacks are served from `poll_batch` / `serve_deliveries`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from gliclass_core.config import redact

log = logging.getLogger("gliclass.worker")

TP = tuple[str, int]
Assignment = Callable[[list[TP]], None]


def _tps(partitions: Iterable[TopicPartition]) -> list[TP]:
    return [(p.topic, p.partition) for p in partitions]


class InputConsumer:
    """A group consumer with manual commits; rebalance events arrive as plain (topic, partition) lists."""

    def __init__(
        self,
        settings: dict[str, Any],
        on_assign: Assignment,
        on_revoke: Assignment,
        on_lost: Assignment,
    ) -> None:
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self.failed_commits: list[TP] = []
        log.info("kafka consumer settings: %s", redact(settings))
        self._consumer = Consumer(
            {**settings, "on_commit": self._committed, "error_cb": self._error, "logger": log}
        )

    def _error(self, err: KafkaError) -> None:
        # Transport errors are retried by librdkafka; they are worth a warning, not a stop.
        if err.fatal():
            log.error("kafka consumer fatal error: %s", err)
        else:
            log.warning("kafka consumer: %s", err)

    def _committed(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        failed = [(p.topic, p.partition) for p in partitions if err is not None or p.error is not None]
        if failed:
            log.warning("offset commit failed for %s: %s (will retry)", failed, err)
            self.failed_commits.extend(failed)

    def subscribe(self, topics: list[str]) -> None:
        self._consumer.subscribe(
            topics,
            on_assign=lambda _c, parts: self._on_assign(_tps(parts)),
            on_revoke=lambda _c, parts: self._on_revoke(_tps(parts)),
            on_lost=lambda _c, parts: self._on_lost(_tps(parts)),
        )

    def poll_batch(self, max_records: int, timeout: float) -> list[Message]:
        """Return up to `max_records` records; errors are logged and skipped, fatal ones raised."""
        out = []
        for msg in self._consumer.consume(max_records, timeout):
            err = msg.error()
            if err is None:
                out.append(msg)
            elif err.fatal():
                raise KafkaException(err)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka consume error: %s", err)
        return out

    def assignment(self) -> list[TP]:
        return _tps(self._consumer.assignment())

    def pause(self, tps: list[TP]) -> None:
        if tps:
            self._consumer.pause([TopicPartition(t, p) for t, p in tps])

    def resume(self, tps: list[TP]) -> None:
        if tps:
            self._consumer.resume([TopicPartition(t, p) for t, p in tps])

    def commit(self, offsets: dict[TP, int], wait: bool = False) -> bool:
        """Commit `offsets` (next offset to read per partition). Returns False when a sync commit fails."""
        if not offsets:
            return True
        parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if wait:
                result = self._consumer.commit(offsets=parts, asynchronous=False)
                return all(p.error is None for p in result or [])
            self._consumer.commit(offsets=parts, asynchronous=True)
            return True
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("offset commit failed: %s", exc)
            return False

    def committed(self, tps: list[TP], timeout: float = 10.0) -> dict[TP, int]:
        """Return the group's committed offsets (absent for partitions without one)."""
        if not tps:
            return {}
        parts = self._consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=timeout)
        return {(p.topic, p.partition): p.offset for p in parts if p.offset >= 0}

    def high_watermark(self, tp: TP) -> int | None:
        """The partition's high watermark as last seen on a fetch (no broker round trip); None if unknown."""
        _low, high = self._consumer.get_watermark_offsets(TopicPartition(tp[0], tp[1]), cached=True)
        return high if high >= 0 else None

    def low_watermark(self, tp: TP) -> int | None:
        """The partition's low watermark as last seen (no broker round trip); None if unknown."""
        low, _high = self._consumer.get_watermark_offsets(TopicPartition(tp[0], tp[1]), cached=True)
        return low if low >= 0 else None

    def seek(self, tp: TP, offset: int | None) -> None:
        """Rewind a partition to `offset` (None: the beginning)."""
        target = TopicPartition(tp[0], tp[1], OFFSET_BEGINNING if offset is None else offset)
        for attempt in range(20):
            try:
                self._consumer.seek(target)
                return
            except KafkaException as exc:
                # A partition being (re)started may not accept a seek for a moment.
                if attempt == 19:
                    raise
                log.debug("seek %s retry: %s", tp, exc)
                time.sleep(0.05)

    def group_metadata(self) -> Any:
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        self._consumer.close()


class LookbackTimeout(Exception):
    """A look-back read did not reach its end offset in time."""


class LookbackReader:
    """Reads back a range of one partition with a consumer of its own (assign only: it never joins the
    group, never commits). Created on first use and kept."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = {
            **settings,
            # Its own group id: librdkafka requires one, and assign() never joins it.
            "group.id": f"{settings.get('group.id', 'gliclass')}.lookback",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # A start below the log start (deleted by retention) reads from the first record kept.
            "auto.offset.reset": "earliest",
        }
        self._consumer: Consumer | None = None

    def read(self, tp: TP, start: int, end: int, timeout: float) -> Iterator[Message]:
        """Yield the records of `tp` with offsets in [start, end), in order.

        Raises LookbackTimeout when no record at or past `end` arrived within `timeout` seconds (the
        caller knows `end` exists: it is the offset of a record just consumed).
        """
        if start >= end:
            return
        if self._consumer is None:
            self._consumer = Consumer({**self._settings, "logger": log})
        consumer = self._consumer
        consumer.assign([TopicPartition(tp[0], tp[1], start)])
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for msg in consumer.consume(500, 0.1):
                    err = msg.error()
                    if err is not None:
                        if err.fatal():
                            raise KafkaException(err)
                        continue
                    offset = msg.offset()
                    if offset is None or offset < start:
                        continue
                    if offset >= end:
                        return
                    yield msg
            raise LookbackTimeout(f"{tp}: offsets {start}..{end} not read back within {timeout:.0f} s")
        finally:
            consumer.unassign()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class OutputProducer:
    """The idempotent (or transactional) producer for outputs and dead letters."""

    def __init__(self, settings: dict[str, Any], transactional: bool) -> None:
        log.info("kafka producer settings: %s", redact(settings))
        self._producer = Producer({**settings, "error_cb": self._error, "logger": log})
        self.transactional = transactional
        self.in_transaction = False
        self._offsets_sent = False  # the open transaction's offsets are in it (a commit retry skips them)
        self.fatal: KafkaError | None = None
        self._partitions: dict[str, int] = {}

    def _error(self, err: KafkaError) -> None:
        if err.fatal():
            # The client is unusable from now on; the loop replaces it (or stops, in a transaction).
            self.fatal = err
            log.error("kafka producer fatal error: %s", err)
        else:
            log.warning("kafka producer: %s", err)

    def purge(self) -> None:
        """Drop everything queued or in flight; their delivery callbacks report a purge error."""
        self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        self._producer.poll(0)

    def init_transactions(self, timeout: float = 30.0) -> None:
        self._producer.init_transactions(timeout)

    def begin(self) -> None:
        """Begin a transaction (the caller checks `in_transaction` first)."""
        self._producer.begin_transaction()
        self.in_transaction = True
        self._offsets_sent = False

    def commit_transaction(self, offsets: dict[TP, int], group_metadata: Any, timeout: float = 30.0) -> None:
        """Add consumed offsets to the open transaction and commit it.

        Called again after a retriable error, it resumes: offsets already added are not sent twice.
        """
        if offsets and not self._offsets_sent:
            parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            self._producer.send_offsets_to_transaction(parts, group_metadata, timeout)
            self._offsets_sent = True
        self._producer.commit_transaction(timeout)
        self.in_transaction = False

    def abort_transaction(self, timeout: float = 30.0) -> None:
        self._producer.abort_transaction(timeout)
        self.in_transaction = False

    def forget_partitions(self) -> dict[str, int]:
        return dict(self._partitions)

    def remember_partitions(self, counts: dict[str, int]) -> None:
        self._partitions.update(counts)

    def partition_count(self, topic: str) -> int | None:
        """Return the topic's partition count (cached), or None when the topic does not exist (yet)."""
        count = self._partitions.get(topic)
        if count is not None:
            return count
        try:
            meta = self._producer.list_topics(topic, timeout=1.0).topics.get(topic)
        except KafkaException as exc:
            log.warning("metadata for %r unavailable: %s", topic, exc)
            return None
        if meta is None or meta.error is not None or not meta.partitions:
            return None
        self._partitions[topic] = len(meta.partitions)
        return self._partitions[topic]

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        """Queue one record. Raises BufferError when the local queue is full."""
        kwargs: dict[str, Any] = {"value": value, "key": key, "headers": headers, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        self._producer.produce(topic, **kwargs)

    def serve_deliveries(self, timeout: float = 0.0) -> int:
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float) -> int:
        """Wait for queued records; return how many are still undelivered."""
        return int(self._producer.flush(timeout))


class Clients(Protocol):
    """The worker's two clients. `producer` is replaced after a fatal error: read it at each use."""

    producer: OutputProducer
    consumer: InputConsumer
