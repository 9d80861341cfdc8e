"""Producing outputs and dead letters: output partitions, delivery reports, in-order re-sends.

`Output.send` encodes a slot's result (or takes its dead letter), picks the output partition and
queues the record. What counts as acknowledged and how a failure is answered differ between the
delivery modes and are the committer's (commit.py): in at-least-once mode a record is
acknowledged by its delivery report, and a failed delivery stops its partition until every
report of it is in; then the failed record and those sent after it go back to the front of the
lane (`requeue_failed`). A producer with a fatal error is replaced and its unacknowledged records
re-sent (`replace_producer`).

Errors are sorted as librdkafka documents them (`delivery_errors`): a record the broker will
never take is dead-lettered with reason `delivery_failed` and its partition moves on (in
exactly-once mode the transaction still aborts, and the re-read record goes to the dead-letter
topic); a topic nothing can be written to stops the worker (`DeliveryStopped`); the rest is
re-sent in order.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict, deque

from confluent_kafka import KafkaError, KafkaException, Message

from gliclass_core.types import Prediction
from worker.codec import BadEvent, dead_letter_headers, encode_result, session_fields
from worker.commit import Committer
from worker.config import KafkaConfig, Route
from worker.consumer import TP, Clients
from worker.delivery import OffsetTracker, OrderedLane
from worker.delivery_errors import (
    MISSING_TOPIC_ERRORS,
    DeliveryFault,
    DeliveryStopped,
    TopicWatch,
    classify,
)
from worker.state import Slot, WorkerStats
from worker.tracing import WorkerTracing

log = logging.getLogger("gliclass.worker")

#: Records remembered as undeliverable across an aborted transaction (exactly-once), oldest dropped.
MAX_UNDELIVERABLE = 10_000


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
        self.topics = TopicWatch(config.missing_topic_timeout_ms / 1000)
        #: Set (from a delivery callback) when a topic-level error means the worker must stop.
        self.stopped: DeliveryStopped | None = None
        #: (partition, offset) -> error, of outputs the broker refused for good inside a transaction
        #: that then aborted: when the record is read again, its dead letter is written instead.
        self.undeliverable: OrderedDict[tuple[TP, int], str] = OrderedDict()

    def raise_if_stopped(self) -> None:
        """Raise the DeliveryStopped a delivery report set (called by the loop, outside callbacks)."""
        if self.stopped is not None:
            raise self.stopped

    def stalled(self, now: float) -> int:
        """Partitions that cannot send right now: a delivery failed, or they wait on a backoff."""
        blocked = {tp for tp, until in self.lane_blocked_until.items() if until > now}
        return len(self.resend | blocked)

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
            self.topics.missing(topic, now, "no metadata for it")  # DeliveryStopped once it stays missing
            log.warning(
                "topic %r does not exist (yet); retrying in %d ms", topic, self.config.retry_backoff_ms
            )
            self.topic_blocked_until[topic] = now + self.config.retry_backoff_ms / 1000
            return False, None
        self.topics.present(topic)
        return True, slot.tp[1] % count

    def send(self, slot: Slot, model_id: str) -> bool:
        """Produce the slot's output or dead letter. False: could not queue it now (keep it)."""
        route = slot.route
        value: bytes | None
        refused_before = self.undeliverable.pop((slot.tp, slot.offset), None) if slot.bad is None else None
        if refused_before is not None:
            slot.bad = BadEvent("delivery_failed", refused_before)
        if slot.bad is None:
            assert slot.event is not None
            session = None
            if slot.session is not None:
                assert slot.session.future is not None
                update = slot.session.future.result()
                if not update.triggered and route.emit == "on_trigger":
                    return self.skip(slot)
                prediction: Prediction | None = update.prediction
                session = session_fields(slot.session.key, update, slot.session.rebuilt)
            else:
                assert slot.future is not None
                prediction = slot.future.result()
            topic = route.output
            value = encode_result(
                slot.event,
                slot.source,
                prediction,
                model_id,
                slot.label_set,
                (time.monotonic() - slot.received) * 1000,
                session,
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
        self.count(slot)
        if self.committer.queued(slot.tp, slot.offset):
            slot.value = None  # acknowledged: the input is not needed any more
        else:
            # Kept until the delivery report: a record the broker refuses for good is dead-lettered.
            slot.in_flight = True
            self.outstanding.setdefault(slot.tp, deque()).append(slot)
        return True

    def skip(self, slot: Slot) -> bool:
        """Acknowledge a session record that writes nothing (`emit = "on_trigger"`, not fired): its
        offset is committed like the others'. False: it cannot be acknowledged now (keep it)."""
        if not self.committer.skip(slot.tp, slot.offset):
            return False
        self.tracing.sent(slot)  # its processing ends here: nothing is sent for it
        self.count(slot)
        slot.value = None
        return True

    def prediction_of(self, slot: Slot) -> Prediction | None:
        """A scored slot's prediction (None for a session record whose strategy did not fire)."""
        if slot.session is not None:
            assert slot.session.future is not None
            return slot.session.future.result().prediction
        assert slot.future is not None
        return slot.future.result()

    def count(self, slot: Slot) -> None:
        """Count the slot's outcome once (a scored record turned into a dead letter moves over)."""
        outcome = "scored" if slot.bad is None else "dead_lettered"
        if slot.counted == outcome:
            return
        if slot.counted == "scored":
            self.stats.scored -= 1  # its output was never written
        slot.counted = outcome
        if slot.bad is None:
            self.stats.scored += 1
            prediction = self.prediction_of(slot)
            if prediction is not None:
                self.stats.count_labels(slot.route.input, prediction.labels)
                self.tracing.predicted(slot.route.input, slot.label_set, prediction)
        else:
            self.stats.dead_lettered += 1
            self.stats.count_dead_letter(slot.bad.reason)
            self.tracing.dead_lettered(slot.route.input, slot.bad.reason)

    def undeliverable_record(self, slot: Slot, topic: str, err: KafkaError) -> None:
        """The broker (or the producer's size check) will never take this record: dead-letter it.

        A dead letter refused so is cut down to its error headers (no value, no carried headers)
        once; refused again, nothing can be written for it and the worker stops.
        """
        if slot.bad is None:
            log.error(
                "%s@%d: output to %r refused for good (%s); dead-lettered", slot.tp, slot.offset, topic, err
            )
            slot.bad = BadEvent("delivery_failed", f"producing the output to {topic!r} failed: {err}")
            return
        if slot.trimmed:
            raise DeliveryStopped(
                f"even the cut-down dead letter of {slot.tp}@{slot.offset} to {topic!r} was refused: {err}"
            )
        log.error(
            "%s@%d: dead letter to %r refused (%s); sending it without value",
            slot.tp,
            slot.offset,
            topic,
            err,
        )
        slot.trimmed = True
        slot.value, slot.headers = None, []
        slot.bad = BadEvent(slot.bad.reason, f"{slot.bad.message} (value dropped: {err})")

    def refused(self, slot: Slot, topic: str, err: KafkaError) -> bool:
        """The producer refused a record (not a full queue). Returns False: the slot stays queued."""
        fault = classify(err)
        if fault is DeliveryFault.RECORD:
            # Nothing was queued (an open transaction is unaffected): the next send dead-letters it.
            self.undeliverable_record(slot, topic, err)
            return False
        if fault is DeliveryFault.TOPIC:
            raise DeliveryStopped(f"cannot produce to {topic!r}: {err}")
        if self.committer.refused(err):
            return False
        if fault is DeliveryFault.PRODUCER:
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
        topic = slot.route.output if slot.bad is None else slot.route.dlq
        fault = self.judge(slot, topic, err)
        if not slot.in_flight:
            # Acknowledged when queued (the committer settles its report), else settled already.
            if fault is DeliveryFault.RECORD and slot.bad is None:
                # Inside a transaction, which aborts: the re-read record is dead-lettered instead.
                self.undeliverable[(slot.tp, slot.offset)] = (
                    f"producing the output to {topic!r} failed: {err}"
                )
                while len(self.undeliverable) > MAX_UNDELIVERABLE:
                    self.undeliverable.popitem(last=False)
            if self.committer.delivered(err):
                self.tracing.delivered(slot, err)
            return
        self.tracing.delivered(slot, err)
        slot.in_flight = False
        if err is None:
            slot.value = None
            self.stats.delivered += 1
            self.tracker.ack(slot.tp, slot.offset)
            sent = self.outstanding.get(slot.tp)
            while sent and not sent[0].in_flight and not sent[0].failed:
                sent.popleft()
            return
        if fault is DeliveryFault.PRODUCER:
            self.clients.producer.fatal = self.clients.producer.fatal or err
        if slot.tp not in self.lanes:
            return  # its partition was revoked or lost: the new owner re-reads it
        if fault is DeliveryFault.RECORD:
            try:
                self.undeliverable_record(slot, topic, err)  # re-sent in order below, as a dead letter
            except DeliveryStopped as stop:
                self.stopped = self.stopped or stop
        now = time.monotonic()
        if now - self.last_retry_log >= 1.0:  # one line a second, not one per record
            self.last_retry_log = now
            log.warning("delivery of %s@%d failed (%s); re-sending in order", slot.tp, slot.offset, err)
        slot.failed = True
        self.stats.delivery_retries += 1
        self.resend.add(slot.tp)

    def judge(self, slot: Slot, topic: str, err: KafkaError | None) -> DeliveryFault | None:
        """Classify a delivery report's error; a topic-level one stops the worker (set here, raised
        by the loop: never from inside librdkafka's callback)."""
        if err is None:
            self.topics.present(topic)
            return None
        fault = classify(err)
        try:
            if fault is DeliveryFault.TOPIC:
                raise DeliveryStopped(f"cannot produce to {topic!r}: {err}")
            if err.code() in MISSING_TOPIC_ERRORS:
                self.topics.missing(topic, time.monotonic(), err)
        except DeliveryStopped as stop:
            self.stopped = self.stopped or stop
        return fault

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
