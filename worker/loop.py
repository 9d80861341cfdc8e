"""The consume -> classify -> produce loop. Runs on one thread; owns both Kafka clients.

Each polled record becomes a `Slot` in its partition's `OrderedLane`. Valid events are submitted
to the shared scheduler at bulk priority and the loop keeps polling while they are scored. A lane
releases its ready prefix to `Output` (output.py), so outputs keep input order per partition.
Offsets are committed only up to the acknowledged prefix (`OffsetTracker`) by the committer of
the delivery mode (commit.py: offset commits, or transactions that commit them with the
outputs). When too much is in flight the whole assignment is paused (still polling, so the group
membership stays alive) and resumed once half of it has drained.
"""

from __future__ import annotations

import functools
import logging
import time

from confluent_kafka import Message

from gliclass_core.config import LabelSet
from gliclass_core.errors import BatchFailed, GliclassError, InvalidInput, NotReady, Overloaded
from gliclass_core.runtime import Priority
from gliclass_core.service import CallContext, ClassifyService
from worker.codec import (
    MAX_VALUE_BYTES,
    BadEvent,
    carry_headers,
    check_record_size,
    decode_event,
    fit_dead_letter,
    record_headers,
    unforeseen,
)
from worker.commit import committer_for
from worker.config import KafkaConfig
from worker.consumer import TP, InputConsumer, LookbackReader, OutputProducer
from worker.delivery import OffsetTracker, OrderedLane
from worker.output import Output
from worker.routes import resolve
from worker.sessions import SessionFeed, session_failure
from worker.state import Slot, WorkerStats
from worker.tracing import WorkerTracing

#: Kafka events are bulk work with no deadline: they wait for room rather than expire.
BULK_CALL = CallContext(priority=Priority.BULK)

log = logging.getLogger("gliclass.worker")

MAX_SCORE_ATTEMPTS = 3


class WorkerLoop:
    """State and steps of the loop; `KafkaWorker` drives it from its thread."""

    def __init__(
        self,
        config: KafkaConfig,
        label_sets: dict[str, LabelSet],
        runtime: ClassifyService,
        fallback_model: str,
    ):
        self.config, self.label_sets = config, label_sets
        self.runtime = runtime
        self._model_id: str | None = None
        self._fallback_model = fallback_model
        self.stats = WorkerStats()
        self.lanes: dict[TP, OrderedLane[Slot]] = {}
        self.tracker = OffsetTracker()
        self.unsubmitted: list[Slot] = []
        self.paused = False
        self.submit_blocked_until = 0.0
        self.rewind_to: dict[TP, int | None] = {}
        self.tracing = WorkerTracing(config.group_id)  # spans and metrics; no-op while telemetry is off
        # The delivery mode is chosen here, once: the loop and the output only call the committer.
        self.committer = committer_for(config, self, self.tracker, self.stats, self.rewind_to, self.rewind)
        self.output = Output(config, self, self.committer, self.lanes, self.tracker, self.stats, self.tracing)
        self.producer: OutputProducer = self.committer.new_producer()
        self.consumer = InputConsumer(
            config.consumer_settings(), self.on_assign, self.on_revoke, self.on_lost
        )
        self.consumer.subscribe([r.input for r in config.routes])
        # Session routes (`session = "key"`): conversations per record key, rebuilt after rebalances.
        self.sessions = SessionFeed(
            runtime.sessions,
            LookbackReader(config.consumer_settings()),
            BULK_CALL,
            lambda: self.max_record_bytes,
            lambda: self.runtime.bulk_limit,
            self.stats,
        )
        self.sessions_checked = False
        #: Partitions re-read from an earlier offset during this step: their other polled records are stale.
        self.reread: set[TP] = set()

    def reconfigure(self, config: KafkaConfig, label_sets: dict[str, LabelSet]) -> None:
        """Use new routes, label sets and tuning from the next step on (client settings are kept)."""
        self.config, self.label_sets = config, label_sets
        self.output.config = self.committer.config = config
        self.sessions_checked = False  # a reload may have made a route a session route

    # ---------------------------------------------------------------- one iteration

    def step(self, fetching: bool = True) -> None:
        """Poll once, submit new events, produce ready results, commit what is acknowledged."""
        if self.producer.fatal is not None:
            self.output.replace_producer()
        self.apply_backpressure(fetching)
        busy = any(len(lane) for lane in self.lanes.values())
        timeout = 0.005 if busy else self.config.poll_timeout_ms / 1000
        msgs = self.tracing.poll(self.consumer, self.tracker, self.config.batch_size, timeout)
        self.check_sessions_supported()
        self.reread.clear()
        fresh = [self.accept(m) for m in msgs]
        self.submit(self.take_unsubmitted() + [s for s in fresh if s is not None and s.bad is None])
        self.produce_ready()
        self.producer.serve_deliveries(0)
        self.output.raise_if_stopped()  # a topic-level delivery error: the worker stops with it
        self.stats.stalled_partitions = self.tracing.stalled_partitions = self.output.stalled(
            time.monotonic()
        )
        self.committer.step()

    @property
    def model_id(self) -> str:
        """The loaded model's id (known once the runtime is warm; the configured id before)."""
        if self._model_id is None:
            try:
                self._model_id = str(self.runtime.info.model_id)
            except GliclassError:
                return self._fallback_model
        return self._model_id

    def check_sessions_supported(self) -> None:
        """Once the model is loaded, stop the worker if a session route runs on a model without sessions."""
        if not self.sessions_checked and self.runtime.ready:
            self.sessions.check_supported(self.config.routes)
            self.sessions_checked = True

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
        if topic is None or partition is None or offset is None:
            return None  # not a record (poll_batch hands on records only)
        tp = (topic, partition)
        route = self.config.route_for(topic)
        if route is None or tp not in self.lanes or tp in self.reread:
            return None  # a record of a topic dropped by a reload, of a revoked or re-read partition
        if route.session is not None and self.sessions.needs_lookback(tp):
            if not self.sessions.load(tp, offset, route, self.label_sets):
                self.reread_from(tp, offset)
                return None
        slot = Slot(tp, offset, msg.key(), msg.value(), [], route, time.monotonic())
        try:
            slot.headers = carry_headers(record_headers(msg))
            check_record_size(slot.key, slot.value, slot.headers, self.max_record_bytes)
            slot.event = decode_event(slot.value, key=slot.key)
            resolved = resolve(slot.event, route, self.label_sets)
            slot.item, slot.label_set = resolved.item, resolved.label_set
            if route.session is not None:
                slot.session = self.sessions.open(slot, resolved.item)
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
        if any(s.session is not None for s in slots):
            self.submit_sessions([s for s in slots if s.session is not None])
            slots = [s for s in slots if s.session is None]
        # The scheduler rejects a call larger than the queue's bulk share; stay well below it.
        chunk = max(1, min(self.config.batch_size, self.runtime.bulk_limit // 4))
        for start in range(0, len(slots), chunk):
            if not self.submit_chunk(slots[start : start + chunk]):
                self.unsubmitted.extend(slots[start + chunk :])
                return

    def submit_chunk(self, slots: list[Slot]) -> bool:
        """Submit one chunk; False when the scheduler is busy (the chunk then waits in `unsubmitted`)."""
        while slots:
            try:
                items = [s.item for s in slots if s.item is not None]
                assert len(items) == len(slots)  # only resolved slots are submitted
                futures = self.runtime.submit(
                    items, BULK_CALL, span_contexts=self.tracing.span_contexts(slots)
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

    def submit_sessions(self, slots: list[Slot]) -> None:
        """Submit session appends in record order; while some wait (service busy), new ones wait behind."""
        if any(s.session is not None for s in self.unsubmitted):
            self.unsubmitted.extend(slots)
            return
        waiting = self.sessions.submit(slots)
        if waiting:
            self.unsubmitted.extend(waiting)
            self.submit_blocked_until = time.monotonic() + 0.02

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
        self.output.requeue_failed(now)
        for tp, lane in self.lanes.items():
            if self.output.held(tp, now):
                continue  # a partition never sends past a record whose delivery failed
            while len(lane) and self.committer.can_send():
                slot = lane.peek()
                if not slot.ready() or not self.finish(slot) or not self.output.send(slot, self.model_id):
                    break
                lane.pop()

    def finish(self, slot: Slot) -> bool:
        """Check a scored slot's future; resubmit a failed batch item. False: not ready to send yet."""
        if slot.bad is None and slot.session is not None:
            slot.bad = session_failure(slot.session)  # never re-appended: its text could apply twice
            return True
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

    def rewind(self) -> None:
        """Re-read every partition from its last committed offset (after an aborted transaction)."""
        for tp in list(self.lanes):
            self.fresh_lane(tp)  # its sessions start afresh: they are rebuilt from the look-back
            if tp in self.rewind_to:  # else nothing was consumed since the last commit
                self.consumer.seek(tp, self.rewind_to[tp])

    def reread_from(self, tp: TP, offset: int) -> None:
        """Drop the partition's in-flight work and read it again from `offset` (look-back failed)."""
        self.fresh_lane(tp)
        self.rewind_to.pop(tp, None)
        self.consumer.seek(tp, offset)
        self.reread.add(tp)

    def fresh_lane(self, tp: TP) -> None:
        """Give the partition an empty lane (and, on a session route, sessions started afresh)."""
        self.abandon(tp)
        self.lanes[tp] = OrderedLane()
        route = self.config.route_for(tp[0])
        if route is not None and route.session is not None:
            self.sessions.assign(tp)

    # ---------------------------------------------------------------- rebalances

    def abandon(self, tp: TP) -> None:
        """Forget a partition's in-flight work (its offsets stay uncommitted, so it is re-read)."""
        lane = self.lanes.pop(tp, None)
        for slot in lane.drain() if lane is not None else []:
            if slot.future is not None:
                slot.future.cancel()
            if slot.session is not None and slot.session.future is not None:
                slot.session.future.cancel()
        self.sessions.drop(tp)  # its conversations are closed; a new owner rebuilds them
        self.unsubmitted = [s for s in self.unsubmitted if s.tp != tp]
        self.output.forget(tp)  # a late delivery report for it is ignored
        self.tracker.drop(tp)

    def on_assign(self, tps: list[TP]) -> None:
        log.info("assigned %s", tps)
        self.stats.assignments += 1
        for tp in tps:
            self.fresh_lane(tp)
            self.rewind_to.pop(tp, None)
        # librdkafka keeps a partition's pause flag across unassign and assign: "partitions will
        # remain paused after a rebalance and re-assignment" (edenhill, confluentinc/librdkafka#1849;
        # confluentinc/confluent-kafka-go#193). A partition paused before it was revoked came back
        # paused and was never fetched again. Set the flag to what the loop wants now.
        if self.paused:
            self.consumer.pause(tps)
        else:
            self.consumer.resume(tps)
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
            if not self.committer.can_send():
                break  # the transaction failed: it is aborted below, the new owner re-reads
            self.produce_ready()
            self.producer.serve_deliveries(0.01)
            if self.unsubmitted:
                self.submit(self.take_unsubmitted())
        self.committer.revoke(revoked)
        self.consumer.resume(tps)  # not paused when it comes back (see on_assign)
        self.stats.revokes += 1
        self.stats.revoked_unacked += sum(self.tracker.unacked(tp) for tp in revoked)
        for tp in tps:
            self.abandon(tp)
            self.rewind_to.pop(tp, None)

    def on_lost(self, tps: list[TP]) -> None:
        """Drop lost partitions without committing (another member owns them now)."""
        log.warning("partitions lost %s", tps)
        self.consumer.resume(tps)  # not paused when it comes back (see on_assign)
        self.stats.revokes += 1
        self.stats.revoked_unacked += sum(self.tracker.unacked(tp) for tp in tps)
        for tp in tps:
            self.abandon(tp)
        self.committer.lost(tps)  # an open transaction is aborted; the other partitions are re-read
        for tp in tps:
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
        self.committer.commit(wait=True)
        while self.committer.commit_pending and time.monotonic() < deadline:
            time.sleep(self.config.retry_backoff_ms / 1000)
            self.committer.commit(wait=True)
        return left == 0 and not self.producer.in_transaction

    def close(self) -> None:
        """Leave the group and close both clients. A transaction still open is aborted, never committed."""
        self.committer.close()
        for tp in list(self.lanes):
            self.abandon(tp)
        self.sessions.reader.close()
        self.consumer.close()
        self.producer.flush(5.0)
