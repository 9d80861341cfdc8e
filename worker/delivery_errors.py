"""Delivery errors sorted the way librdkafka documents them, and what the worker does with each.

librdkafka retries what can be retried inside the producer (`retries`, `message.timeout.ms`): a
delivery report only carries an error once "librdkafka encountered a permanent failure, or the
retry counter for temporary errors has been exhausted" (rdkafkacpp.h, `DeliveryReportCb`). Errors
from the broker (codes without a leading underscore) "typically [mean] the error was permanent
(from the producer's perspective)" (edenhill, confluentinc/librdkafka#2201); per-record errors
come either from `produce()` itself or in the delivery report (confluentinc/confluent-kafka-python
#655). An unknown topic is only reported after `topic.metadata.propagation.max.ms`
(confluentinc/librdkafka#2858, #2862), and "indicates that this topic no longer exists, and is
thus a permanent error" (edenhill, confluentinc/librdkafka#3513). So:

- RECORD: this record can never be written (too large for the topic or the producer's
  `message.max.bytes`, rejected as invalid, e.g. a null key on a compacted topic). Its input goes
  to the dead-letter topic with reason `delivery_failed` and the broker's error; the partition
  moves on.
- TOPIC: nothing can be written to the topic (not authorised, invalid, or missing for longer than
  `[kafka] missing_topic_timeout_ms`). Retrying cannot help and skipping would drop every record:
  the worker stops with the reason (health NOT_SERVING, non-zero exit) to be fixed and restarted.
- PRODUCER: the idempotent producer is broken (fatal, fenced, sequence lost): replaced (output.py).
- RETRIABLE: anything else (timed out in the queue, a transport failure): re-sent in order, as
  before, with `retry_backoff_ms` between attempts.
"""

from __future__ import annotations

import enum

from confluent_kafka import KafkaError


class DeliveryFault(enum.Enum):
    RETRIABLE = "retriable"
    RECORD = "record"
    TOPIC = "topic"
    PRODUCER = "producer"


#: The broker (or the producer's own size check) will never take this record.
RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,  # larger than the topic's max.message.bytes or message.max.bytes
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_MSG,  # CORRUPT_MESSAGE: failed its CRC / cannot be parsed
        KafkaError.INVALID_RECORD,  # e.g. a null key on a compacted topic
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        KafkaError.POLICY_VIOLATION,
    }
)

#: Nothing can be written to the topic until an operator acts.
TOPIC_ERRORS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,  # an invalid topic name
    }
)

#: The topic does not exist (yet): permanent once it stays missing for `missing_topic_timeout_ms`.
MISSING_TOPIC_ERRORS = frozenset(
    {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}
)

#: After these an idempotent producer never recovers (librdkafka keeps failing every record).
PRODUCER_BROKEN = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError._FATAL,
    }
)


def classify(err: KafkaError) -> DeliveryFault:
    """Which kind of delivery error `err` is (a missing topic counts as RETRIABLE: see `TopicWatch`)."""
    if err.fatal() or err.code() in PRODUCER_BROKEN:
        return DeliveryFault.PRODUCER
    if err.code() in RECORD_ERRORS:
        return DeliveryFault.RECORD
    if err.code() in TOPIC_ERRORS:
        return DeliveryFault.TOPIC
    return DeliveryFault.RETRIABLE


class DeliveryStopped(RuntimeError):
    """The worker cannot deliver to a topic and stops (topic-level permanent error)."""


class TopicWatch:
    """How long each output topic has been missing; raise once it stays missing too long."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._missing_since: dict[str, float] = {}

    def missing(self, topic: str, now: float, err: object) -> None:
        """The topic was reported missing now; DeliveryStopped once that lasted `timeout_s`."""
        since = self._missing_since.setdefault(topic, now)
        if now - since >= self.timeout_s:
            raise DeliveryStopped(
                f"output topic {topic!r} does not exist ({err}); still missing after "
                f"{self.timeout_s:.0f} s ([kafka] missing_topic_timeout_ms): create it and restart"
            )

    def present(self, topic: str) -> None:
        self._missing_since.pop(topic, None)
