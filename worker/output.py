"""Producing outputs and dead letters: output partitions, delivery reports, in-order re-sends.

`Output.send` encodes a slot's result (or takes its dead letter), picks the output partition and
queues the record. What counts as acknowledged and how a failure is answered differ between the
delivery modes and are the committer's (commit.py): in at-least-once mode a record is
acknowledged by its delivery report, and a failed delivery stops its partition until every
report of it is in; then the failed record and those sent after it go back to the front of the
lane (`requeue_failed`). A producer with a fatal error is replaced and its unacknowledged records
re-sent (`replace_producer`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque

from confluent_kafka import KafkaError, KafkaException, Message

from worker.codec import dead_letter_headers, encode_result
from worker.commit import Committer
from worker.config import KafkaConfig, Route
from worker.consumer import TP, Clients
from worker.delivery import OffsetTracker, OrderedLane
from worker.state import Slot, WorkerStats
from worker.tracing import WorkerTracing

log = logging.getLogger("gliclass.worker")

# Delivery errors after which an idempotent producer never recovers (librdkafka keeps failing
# every record with them): the producer is replaced and the records re-sent.
PRODUCER_BROKEN = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError._FATAL,
    }
)


class Output:
    """Sends slots through the clients' producer; serves their delivery reports on the loop thread."""

    def __init__(
        self,
        config: KafkaConfig,
        clients: Clients,
        committer: Committer,
        lanes: dict[TP, OrderedLane[Slot]],
        tracker: OffsetTracker,
        stats: WorkerStats,
        tracing: WorkerTracing,
    ) -> None:
        self.config, self.clients, self.committer = config, clients, committer
        self.lanes, self.tracker, self.stats, self.tracing = lanes, tracker, stats, tracing
        # Records produced per partition whose delivery is not yet confirmed (in order), partitions
        # with a failed delivery to re-send, and partitions or topics waiting on a backoff.
        self.outstanding: dict[TP, deque[Slot]] = {}
        self.resend: set[TP] = set()
        self.lane_blocked_until: dict[TP, float] = {}
        self.topic_blocked_until: dict[str, float] = {}
        self.last_retry_log = 0.0

    def held(self, tp: TP, now: float) -> bool:
        """True while the partition may not send: a delivery failed, or it waits on a backoff."""
        return tp in self.resend or self.lane_blocked_until.get(tp, 0.0) > now

    def partition_for(self, route: Route, topic: str, slot: Slot) -> tuple[bool, int | None]:
        """Pick the output partition; (False, None) while the topic is missing (retried with backoff)."""
        if route.partitioning == "key":
            return True, None
        now = time.monotonic()
        if self.topic_blocked_until.get(topic, 0.0) > now:
            return False, None
        count = self.clients.producer.partition_count(topic)
        if count is None:
            log.warning(
                "topic %r does not exist (yet); retrying in %d ms", topic, self.config.retry_backoff_ms
            )
            self.topic_blocked_until[topic] = now + self.config.retry_backoff_ms / 1000
            return False, None
        return True, slot.tp[1] % count

    def send(self, slot: Slot, model_id: str) -> bool:
        """Produce the slot's output or dead letter. False: could not queue it now (keep it)."""
        route = slot.route
        value: bytes | None
        if slot.bad is None:
            assert slot.future is not None and slot.event is not None
            prediction = slot.future.result()
            topic = route.output
            value = encode_result(
                slot.event,
                slot.source,
                prediction,
                model_id,
                slot.label_set,
                (time.monotonic() - slot.received) * 1000,
            )
            headers = slot.headers
        else:
            topic, value = route.dlq, slot.value
            headers = dead_letter_headers(slot.headers, slot.source, slot.bad.reason, slot.bad.message)
        ok, partition = self.partition_for(route, topic, slot)
        if not ok:
            return False
        stamped = self.committer.stamp(self.tracing.sending(slot, topic, headers))
        if stamped is None:
            return False
        slot.sends += 1
        report = functools.partial(self.delivered, slot, slot.sends)
        try:
            self.clients.producer.produce(topic, value, slot.key, stamped, partition, report)
        except BufferError:
            slot.sends -= 1
            self.clients.producer.serve_deliveries(0.05)
            return False
        except KafkaException as exc:
            slot.sends -= 1
            return self.refused(slot, topic, exc.args[0])
        self.tracing.sent(slot)
        if slot.sends == 1:
            if slot.bad is None:
                self.stats.scored += 1
                counts = self.stats.predicted_labels.setdefault(route.input, {})
                for label in prediction.labels:
                    counts[label] = counts.get(label, 0) + 1
                self.tracing.predicted(route.input, slot.label_set, prediction)
            else:
                self.stats.dead_lettered += 1
                reasons = self.stats.dead_letter_reasons
                reasons[slot.bad.reason] = reasons.get(slot.bad.reason, 0) + 1
                self.tracing.dead_lettered(route.input, slot.bad.reason)
        slot.value = slot.value if slot.bad is not None else None  # free the input once encoded
        if not self.committer.queued(slot.tp, slot.offset):
            slot.in_flight = True
            self.outstanding.setdefault(slot.tp, deque()).append(slot)
        return True

    def refused(self, slot: Slot, topic: str, err: KafkaError) -> bool:
        """The producer refused a record (not a full queue). Returns False: the slot stays queued."""
        if self.committer.refused(err):
            return False
        if err.fatal() or err.code() in PRODUCER_BROKEN:
            self.clients.producer.fatal = self.clients.producer.fatal or err
            return False
        log.warning(
            "producing to %r refused (%s); retrying in %d ms", topic, err, self.config.retry_backoff_ms
        )
        self.lane_blocked_until[slot.tp] = time.monotonic() + self.config.retry_backoff_ms / 1000
        return False

    def delivered(self, slot: Slot, send: int, err: KafkaError | None, _msg: Message | None = None) -> None:
        """Serve one delivery report (the producer's callback)."""
        if send != slot.sends:
            return  # a report for an earlier copy, already settled (re-sent since)
        if not slot.in_flight:
            # Acknowledged when queued (the committer settles its report), else settled already.
            if self.committer.delivered(err):
                self.tracing.delivered(slot, err)
            return
        self.tracing.delivered(slot, err)
        slot.in_flight = False
        if err is None:
            self.stats.delivered += 1
            self.tracker.ack(slot.tp, slot.offset)
            sent = self.outstanding.get(slot.tp)
            while sent and not sent[0].in_flight and not sent[0].failed:
                sent.popleft()
            return
        if err.fatal() or err.code() in PRODUCER_BROKEN:
            self.clients.producer.fatal = self.clients.producer.fatal or err
        if slot.tp not in self.lanes:
            return  # its partition was revoked or lost: the new owner re-reads it
        now = time.monotonic()
        if now - self.last_retry_log >= 1.0:  # one line a second, not one per record
            self.last_retry_log = now
            log.warning("delivery of %s@%d failed (%s); re-sending in order", slot.tp, slot.offset, err)
        slot.failed = True
        self.stats.delivery_retries += 1
        self.resend.add(slot.tp)

    def requeue_failed(self, now: float) -> None:
        """Put each partition's first failed record and all after it back, once its reports are in.

        Records sent after the failed one are re-sent too (at-least-once allows the duplicates), so
        the partition's outputs from the re-sent copy on are in input order again.
        """
        for tp in [tp for tp in self.resend if tp in self.lanes]:
            sent = self.outstanding.get(tp, deque())
            if any(s.in_flight for s in sent):
                continue
            while sent and not sent[0].failed:
                sent.popleft()
            again = list(sent)
            sent.clear()
            for s in again:
                s.failed = False
            self.lanes[tp].requeue(again)
            self.resend.discard(tp)
            self.lane_blocked_until[tp] = now + self.config.retry_backoff_ms / 1000
            self.stats.resent += len(again)

    def replace_producer(self) -> None:
        """Swap a producer that hit a fatal error for a fresh one; its unacknowledged records are re-sent."""
        err = self.clients.producer.fatal
        self.committer.producer_failed(err)
        log.warning(
            "replacing the kafka producer after a fatal error (%s); unacknowledged records are re-sent", err
        )
        old = self.clients.producer
        old.purge()
        # Serve the old producer's delivery reports (purged records report an error) before it is
        # dropped; a record still without a report is treated as failed: no partition waits on it.
        old.flush(1.0)
        for tp, sent in self.outstanding.items():
            for slot in sent:
                if slot.in_flight:
                    slot.in_flight, slot.failed = False, True
                    self.stats.delivery_retries += 1
                    self.resend.add(tp)
        self.clients.producer = self.committer.new_producer()
        self.clients.producer.remember_partitions(old.forget_partitions())
        self.stats.producer_restarts += 1

    def forget(self, tp: TP) -> None:
        """Drop a partition's delivery state (revoked, lost or rewound): late reports are ignored."""
        for slot in self.outstanding.pop(tp, ()):
            slot.in_flight = False
        self.resend.discard(tp)
        self.lane_blocked_until.pop(tp, None)
