"""The consume -> classify -> produce loop. Runs on one thread; owns both Kafka clients.

Each polled record becomes a `Slot` in its partition's `OrderedLane`. Valid events are submitted
to the shared scheduler at bulk priority and the loop keeps polling while they are scored. A lane
releases its ready prefix to the producer, so outputs keep input order per partition; a failed
delivery stops its partition until every report of it is in, then the failed record and those
sent after it go back to the front of the lane (`requeue_failed`). Offsets are committed only up
to the acknowledged prefix (`OffsetTracker`); in exactly-once mode `Transaction` (transaction.py)
commits them with the outputs, or aborts and rewinds. When too much is in flight the
whole assignment is paused (still polling, so the group membership stays alive) and resumed once
half of it has drained.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from gliclass_core.config import LabelSet
from gliclass_core.errors import BatchFailed, GliclassError, InvalidInput, NotReady, Overloaded
from gliclass_core.types import Prediction
from worker.codec import (
    MAX_VALUE_BYTES,
    BadEvent,
    Event,
    Source,
    carry_headers,
    check_record_size,
    dead_letter_headers,
    decode_event,
    encode_result,
    fit_dead_letter,
    unforeseen,
)
from worker.config import KafkaConfig, Route
from worker.consumer import TP, InputConsumer, OutputProducer
from worker.delivery import OffsetTracker, OrderedLane
from worker.routes import resolve
from worker.tracing import WorkerTracing
from worker.transaction import Transaction

log = logging.getLogger("gliclass.worker")

MAX_SCORE_ATTEMPTS = 3
TXN_HEADER = "gliclass.txn"
# Delivery errors after which an idempotent producer never recovers (librdkafka keeps failing
# every record with them): the loop replaces the producer and re-sends.
PRODUCER_BROKEN = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError._FATAL,
    }
)


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
    item: Any = None
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


class WorkerLoop:
    """State and steps of the loop; `KafkaWorker` drives it from its thread."""

    def __init__(
        self, config: KafkaConfig, label_sets: dict[str, LabelSet], runtime: Any, fallback_model: str
    ):
        self.config, self.label_sets = config, label_sets
        self.runtime, self.scheduler = runtime, runtime.scheduler
        self._model_id: str | None = None
        self._fallback_model = fallback_model
        self.stats = WorkerStats()
        self.lanes: dict[TP, OrderedLane[Slot]] = {}
        self.tracker = OffsetTracker()
        self.unsubmitted: list[Slot] = []
        # At-least-once: records produced per partition whose delivery is not yet confirmed (in
        # order), partitions with a failed delivery to re-send, and partitions waiting on a backoff.
        self.outstanding: dict[TP, deque[Slot]] = {}
        self.resend: set[TP] = set()
        self.lane_blocked_until: dict[TP, float] = {}
        self.paused = False
        self.submit_blocked_until = 0.0
        self.topic_blocked_until: dict[str, float] = {}
        self.last_retry_log = 0.0
        self.rewind_to: dict[TP, int | None] = {}
        self.last_commit = time.monotonic()
        self.tracing = WorkerTracing(config.group_id)  # spans and metrics; no-op while telemetry is off
        # Names each transaction in a header of the records it writes (TXN_HEADER), so duplicates
        # on a broker that shows aborted records to read_committed consumers can be traced.
        self.txn = Transaction(self, uuid.uuid4().hex[:12])
        self.producer = OutputProducer(config.producer_settings(), transactional=config.exactly_once)
        if config.exactly_once:
            self.producer.init_transactions()
        self.consumer = InputConsumer(
            config.consumer_settings(), self.on_assign, self.on_revoke, self.on_lost
        )
        self.consumer.subscribe([r.input for r in config.routes])

    # ---------------------------------------------------------------- one iteration

    def step(self, fetching: bool = True) -> None:
        """Poll once, submit new events, produce ready results, commit what is acknowledged."""
        if self.producer.fatal is not None:
            self.replace_producer()
        self.apply_backpressure(fetching)
        busy = any(len(lane) for lane in self.lanes.values())
        timeout = 0.005 if busy else self.config.poll_timeout_ms / 1000
        msgs = self.tracing.poll(self.consumer, self.tracker, self.config.batch_size, timeout)
        fresh = [self.accept(m) for m in msgs]
        self.submit(self.take_unsubmitted() + [s for s in fresh if s is not None and s.bad is None])
        self.produce_ready()
        self.producer.serve_deliveries(0)
        if self.txn.failed is not None:
            self.txn.abort(self.txn.failed)  # at once: nothing more can be written into it
        interval = self.config.retry_backoff_ms if self.txn.commit_pending else self.config.commit_interval_ms
        if time.monotonic() - self.last_commit >= interval / 1000:
            self.commit()

    @property
    def model_id(self) -> str:
        """The loaded model's id (known once the runtime is warm; the configured id before)."""
        if self._model_id is None:
            try:
                self._model_id = str(self.runtime.info.model_id)
            except GliclassError:
                return self._fallback_model
        return self._model_id

    def in_flight(self) -> int:
        return self.tracker.unacked()

    def apply_backpressure(self, fetching: bool) -> None:
        bound = self.config.max_in_flight
        should_pause = not fetching or self.in_flight() >= bound or bool(self.unsubmitted)
        if should_pause and not self.paused:
            self.consumer.pause(self.consumer.assignment())
            self.paused = True
            self.stats.pauses += 1
        elif self.paused and fetching and not self.unsubmitted and self.in_flight() <= bound // 2:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False

    # ---------------------------------------------------------------- intake

    def accept(self, msg: Message) -> Slot | None:
        """Turn a record into a slot in its lane (decoded and resolved, or marked bad).

        Never raises for a record: a failure nobody foresaw becomes an `internal_error` dead letter.
        """
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        tp = (topic, partition)
        route = self.config.route_for(topic)
        if route is None or tp not in self.lanes:
            return None  # a record of a topic dropped by a reload, or of a revoked partition
        slot = Slot(tp, offset, msg.key(), msg.value(), [], route, time.monotonic())
        try:
            slot.headers = carry_headers(msg.headers())
            check_record_size(slot.key, slot.value, slot.headers, self.max_record_bytes)
            slot.event = decode_event(slot.value)
            resolved = resolve(slot.event, route, self.label_sets)
            slot.item, slot.label_set = resolved.item, resolved.label_set
        except BadEvent as bad:
            slot.bad = bad
        except Exception as exc:
            log.exception("unexpected failure decoding %s@%d; dead-lettered", tp, offset)
            slot.bad = unforeseen(exc)
        if slot.bad is not None and slot.bad.reason == "too_large":
            slot.key, slot.value, slot.headers = fit_dead_letter(
                slot.key, slot.value, slot.headers, self.max_record_bytes
            )
        self.stats.consumed += 1
        self.tracker.track(tp, offset)
        self.rewind_to.setdefault(tp, offset)
        self.tracing.accepted(slot, msg)
        self.lanes[tp].push(slot)
        return slot

    @functools.cached_property
    def max_record_bytes(self) -> int:
        """The producer's message.max.bytes: outputs and dead letters must fit in it."""
        try:
            return int(self.config.producer_settings().get("message.max.bytes", MAX_VALUE_BYTES))
        except (TypeError, ValueError):
            return MAX_VALUE_BYTES

    def take_unsubmitted(self) -> list[Slot]:
        if not self.unsubmitted or time.monotonic() < self.submit_blocked_until:
            return []
        slots, self.unsubmitted = self.unsubmitted, []
        return slots

    def submit(self, slots: list[Slot]) -> None:
        """Submit slots to the scheduler at bulk priority; a full queue keeps them for a later retry."""
        # The scheduler rejects a call larger than its whole queue; stay well below it.
        chunk = max(1, min(self.config.batch_size, getattr(self.scheduler, "max_queue", 1 << 30) // 4))
        for start in range(0, len(slots), chunk):
            if not self.submit_chunk(slots[start : start + chunk]):
                self.unsubmitted.extend(slots[start + chunk :])
                return

    def submit_chunk(self, slots: list[Slot]) -> bool:
        """Submit one chunk; False when the scheduler is busy (the chunk then waits in `unsubmitted`)."""
        from gliclass_core.runtime import Priority

        while slots:
            try:
                futures = self.scheduler.submit(
                    [s.item for s in slots],
                    priority=Priority.BULK,
                    span_contexts=self.tracing.span_contexts(slots),
                )
            except InvalidInput as exc:
                if exc.index is None or not 0 <= exc.index < len(slots):
                    # About the call as a whole (its passes together exceed the queue: many labels
                    # per event): one at a time, each fits or is refused with its own reason.
                    if len(slots) > 1:
                        return self.submit_singly(slots)
                    slots[0].bad = BadEvent("invalid_input", exc.bare_message)
                    return True
                slots[exc.index].bad = BadEvent("invalid_input", exc.bare_message)
                slots = slots[: exc.index] + slots[exc.index + 1 :]
                continue
            except (Overloaded, NotReady) as exc:
                log.debug("scheduler busy (%s); %d events wait", exc, len(slots))
                self.unsubmitted.extend(slots)
                self.submit_blocked_until = time.monotonic() + 0.02
                return False
            except Exception as exc:  # a failure nobody foresaw while preparing an item
                if len(slots) > 1:
                    return self.submit_singly(slots)  # find the event that caused it
                slot = slots[0]
                log.exception("unexpected failure preparing %s@%d; dead-lettered", slot.tp, slot.offset)
                slot.bad = unforeseen(exc)
                return True
            for slot, future in zip(slots, futures):
                slot.future = future
                slot.attempts += 1
            return True
        return True

    def submit_singly(self, slots: list[Slot]) -> bool:
        """Submit one slot at a time (after an unforeseen failure); False when the scheduler is busy."""
        for i, slot in enumerate(slots):
            if not self.submit_chunk([slot]):
                self.unsubmitted.extend(slots[i + 1 :])
                return False
        return True

    # ---------------------------------------------------------------- output

    def produce_ready(self) -> None:
        """Send each partition's ready prefix, in input order; re-queue failed deliveries first."""
        now = time.monotonic()
        for tp in [tp for tp in self.resend if tp in self.lanes]:
            self.requeue_failed(tp, now)
        for tp, lane in self.lanes.items():
            if tp in self.resend or self.lane_blocked_until.get(tp, 0.0) > now:
                continue  # a partition never sends past a record whose delivery failed
            while len(lane) and self.txn.can_send():
                slot = lane.peek()
                if not slot.ready() or not self.finish(slot) or not self.send(slot):
                    break
                lane.pop()

    def finish(self, slot: Slot) -> bool:
        """Check a scored slot's future; resubmit a failed batch item. False: not ready to send yet."""
        if slot.bad is not None or slot.future is None:
            return True
        exc = slot.future.exception() if not slot.future.cancelled() else NotReady("cancelled")
        if exc is None:
            return True
        if isinstance(exc, BatchFailed | NotReady | Overloaded) and slot.attempts < MAX_SCORE_ATTEMPTS:
            log.warning("re-scoring %s@%d after: %s", slot.tp, slot.offset, exc)
            slot.future = None
            self.unsubmitted.append(slot)
            return False
        reason = getattr(exc, "reason", "error")
        slot.bad = BadEvent(reason, f"classification failed: {exc}")
        return True

    def partition_for(self, route: Route, topic: str, slot: Slot) -> tuple[bool, int | None]:
        """Pick the output partition; (False, None) while the topic is missing (retried with backoff)."""
        if route.partitioning == "key":
            return True, None
        now = time.monotonic()
        if self.topic_blocked_until.get(topic, 0.0) > now:
            return False, None
        count = self.producer.partition_count(topic)
        if count is None:
            log.warning(
                "topic %r does not exist (yet); retrying in %d ms", topic, self.config.retry_backoff_ms
            )
            self.topic_blocked_until[topic] = now + self.config.retry_backoff_ms / 1000
            return False, None
        return True, slot.tp[1] % count

    def send(self, slot: Slot) -> bool:
        """Produce the slot's output or dead letter. False: could not queue it now (keep it)."""
        route = slot.route
        if slot.bad is None:
            assert slot.future is not None and slot.event is not None
            prediction = slot.future.result()
            topic = route.output
            value = encode_result(
                slot.event,
                slot.source,
                prediction,
                self.model_id,
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
        headers = self.tracing.sending(slot, topic, headers)
        if self.config.exactly_once:
            name = self.txn.ensure_open()
            if name is None:
                return False  # the transaction failed to begin: it is aborted on this step
            headers = [*headers, (TXN_HEADER, name.encode())]
        slot.sends += 1
        try:
            self.producer.produce(
                topic,
                value,
                slot.key,
                headers,
                partition,
                lambda err, _msg, s=slot, n=slot.sends: self.delivered(s, n, err),
            )
        except BufferError:
            slot.sends -= 1
            self.producer.serve_deliveries(0.05)
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
            else:
                self.stats.dead_lettered += 1
                reasons = self.stats.dead_letter_reasons
                reasons[slot.bad.reason] = reasons.get(slot.bad.reason, 0) + 1
        slot.value = slot.value if slot.bad is not None else None  # free the input once encoded
        if self.config.exactly_once:
            # Inside a transaction the output and the offset commit atomically: queued = acknowledged.
            self.txn.wrote(slot.tp, slot.offset)
            self.tracker.ack(slot.tp, slot.offset)
        else:
            slot.in_flight = True
            self.outstanding.setdefault(slot.tp, deque()).append(slot)
        return True

    def refused(self, slot: Slot, topic: str, err: KafkaError) -> bool:
        """The producer refused a record (not a full queue). Returns False: the slot stays queued."""
        if self.config.exactly_once:
            # Any refusal inside a transaction (librdkafka answers _STATE once the transaction is in
            # an abortable state) fails the whole transaction: abort and re-read, never skip.
            self.txn.fail(err)
            return False
        if err.fatal() or err.code() in PRODUCER_BROKEN:
            self.producer.fatal = self.producer.fatal or err
            return False
        log.warning(
            "producing to %r refused (%s); retrying in %d ms", topic, err, self.config.retry_backoff_ms
        )
        self.lane_blocked_until[slot.tp] = time.monotonic() + self.config.retry_backoff_ms / 1000
        return False

    def delivered(self, slot: Slot, send: int, err: KafkaError | None) -> None:
        if send != slot.sends or (not slot.in_flight and not self.config.exactly_once):
            return  # a report for an earlier copy, already settled (re-sent since)
        self.tracing.delivered(slot, err)
        if self.config.exactly_once:
            if err is None:
                self.stats.delivered += 1
            elif self.txn.failed is None:  # one line per transaction, not one per record
                log.warning("delivery failed inside transaction %s (it will abort): %s", self.txn.name, err)
                self.txn.fail(err)
            return
        slot.in_flight = False
        if err is None:
            self.stats.delivered += 1
            self.tracker.ack(slot.tp, slot.offset)
            sent = self.outstanding.get(slot.tp)
            while sent and not sent[0].in_flight and not sent[0].failed:
                sent.popleft()
            return
        if err.fatal() or err.code() in PRODUCER_BROKEN:
            self.producer.fatal = self.producer.fatal or err
        if slot.tp not in self.lanes:
            return  # its partition was revoked or lost: the new owner re-reads it
        now = time.monotonic()
        if now - self.last_retry_log >= 1.0:  # one line a second, not one per record
            self.last_retry_log = now
            log.warning("delivery of %s@%d failed (%s); re-sending in order", slot.tp, slot.offset, err)
        slot.failed = True
        self.stats.delivery_retries += 1
        self.resend.add(slot.tp)

    def requeue_failed(self, tp: TP, now: float) -> None:
        """Once every report of the partition is in, put its first failed record and all after it back.

        Records sent after the failed one are re-sent too (at-least-once allows the duplicates), so
        the partition's outputs from the re-sent copy on are in input order again.
        """
        sent = self.outstanding.get(tp, deque())
        if any(s.in_flight for s in sent):
            return
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
        err = self.producer.fatal
        if self.config.exactly_once:
            # Fenced or broken inside a transaction: only a restart (which re-reads from the last
            # committed transaction) keeps exactly-once.
            raise KafkaException(err)
        log.warning(
            "replacing the kafka producer after a fatal error (%s); unacknowledged records are re-sent", err
        )
        old = self.producer
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
        self.producer = OutputProducer(self.config.producer_settings(), transactional=False)
        self.producer.remember_partitions(old.forget_partitions())
        self.stats.producer_restarts += 1

    # ---------------------------------------------------------------- commits

    def commit(self, wait: bool = False, only: list[TP] | None = None) -> None:
        """Commit acknowledged offsets (at-least-once) or commit the open transaction (exactly-once)."""
        self.last_commit = time.monotonic()
        if self.config.exactly_once:
            self.txn.commit()
            return
        for tp in self.consumer.failed_commits:
            self.tracker.mark_committed({tp: -1})
        self.consumer.failed_commits.clear()
        offsets = self.tracker.committable()
        if only is not None:
            offsets = {tp: o for tp, o in offsets.items() if tp in only}
        if offsets and self.consumer.commit(offsets, wait=wait):
            self.tracker.mark_committed(offsets)
            self.stats.commits += 1

    def rewind(self) -> None:
        """Re-read every partition from its last committed offset (after an aborted transaction)."""
        for tp in list(self.lanes):
            self.abandon(tp)
            self.lanes[tp] = OrderedLane()
            if tp in self.rewind_to:  # else nothing was consumed since the last commit
                self.consumer.seek(tp, self.rewind_to[tp])

    # ---------------------------------------------------------------- rebalances

    def abandon(self, tp: TP) -> None:
        """Forget a partition's in-flight work (its offsets stay uncommitted, so it is re-read)."""
        lane = self.lanes.pop(tp, None)
        for slot in lane.drain() if lane is not None else []:
            if slot.future is not None:
                slot.future.cancel()
        self.unsubmitted = [s for s in self.unsubmitted if s.tp != tp]
        for slot in self.outstanding.pop(tp, ()):
            slot.in_flight = False  # a late delivery report for it is ignored
        self.resend.discard(tp)
        self.lane_blocked_until.pop(tp, None)
        self.tracker.drop(tp)

    def on_assign(self, tps: list[TP]) -> None:
        log.info("assigned %s", tps)
        for tp in tps:
            self.abandon(tp)
            self.lanes[tp] = OrderedLane()
            self.rewind_to.pop(tp, None)
        if self.paused:
            self.consumer.pause(tps)
        # Learn output partition counts now, not on the first result (which may come mid-outage).
        for route in self.config.routes:
            if route.partitioning == "input":
                for topic in (route.output, route.dlq):
                    self.producer.partition_count(topic)

    def on_revoke(self, tps: list[TP]) -> None:
        """Finish the revoked partitions' in-flight work within the grace period, commit, drop the rest."""
        log.info("revoked %s", tps)
        deadline = time.monotonic() + self.config.revoke_grace_ms / 1000
        revoked = [tp for tp in tps if tp in self.lanes]
        while time.monotonic() < deadline and any(self.tracker.unacked(tp) for tp in revoked):
            if not self.txn.can_send():
                break  # the transaction failed: it is aborted below, the new owner re-reads
            self.produce_ready()
            self.producer.serve_deliveries(0.01)
            if self.unsubmitted:
                self.submit(self.take_unsubmitted())
        if self.config.exactly_once:
            self.txn.commit()
        else:
            self.producer.flush(min(5.0, self.config.revoke_grace_ms / 1000))
            self.commit(wait=True, only=revoked)
        for tp in tps:
            self.abandon(tp)
            self.rewind_to.pop(tp, None)

    def on_lost(self, tps: list[TP]) -> None:
        """Drop lost partitions without committing (another member owns them now)."""
        log.warning("partitions lost %s", tps)
        if self.config.exactly_once and self.producer.in_transaction:
            # The open transaction may hold outputs of lost partitions: abort it and re-read the rest.
            for tp in tps:
                self.abandon(tp)
            self.txn.abort(f"partitions lost: {tps}")
        for tp in tps:
            self.abandon(tp)
            self.rewind_to.pop(tp, None)

    # ---------------------------------------------------------------- shutdown

    def drain(self, timeout: float) -> bool:
        """Stop fetching, finish in-flight work and commit. True when nothing was left behind."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.in_flight():
            self.step(fetching=False)
        left = self.in_flight()
        self.producer.flush(max(0.5, deadline - time.monotonic()))
        self.producer.serve_deliveries(0)
        self.commit(wait=True)
        while self.txn.commit_pending and time.monotonic() < deadline:
            time.sleep(self.config.retry_backoff_ms / 1000)
            self.commit(wait=True)
        return left == 0 and not self.producer.in_transaction

    def close(self) -> None:
        """Leave the group and close both clients. A transaction still open is aborted, never committed."""
        if self.config.exactly_once:
            self.txn.abandon()
        for tp in list(self.lanes):
            self.abandon(tp)
        self.consumer.close()
        self.producer.flush(5.0)
