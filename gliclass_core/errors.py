"""Typed errors raised by the core. Edges map them to gRPC codes / DLQ reasons in one place each."""

from __future__ import annotations


class GliclassError(Exception):
    """Base class of every error the core raises on purpose."""

    #: Short machine-readable reason, used as the Kafka DLQ `error.reason` header.
    reason = "error"


class InvalidInput(GliclassError, ValueError):
    """A request is malformed. `field` names the offending field, `index` the item (if any)."""

    reason = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None, index: int | None = None) -> None:
        self.field = field
        self.index = index
        where = []
        if index is not None:
            where.append(f"item {index}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.bare_message = message


class ConfigError(GliclassError):
    """The configuration file or an override is invalid; the message names the key."""

    reason = "config"


class CheckpointError(GliclassError):
    """A checkpoint cannot be loaded: missing or corrupt files, unreachable hub, bad config."""

    reason = "checkpoint"


class UnsupportedModel(CheckpointError):
    """The checkpoint asks for an architecture, scorer or pooling we do not implement."""

    reason = "unsupported_model"


class Overloaded(GliclassError):
    """The scheduler queue is full; the caller should back off and retry."""

    reason = "overloaded"


class DeadlineExceeded(GliclassError):
    """The item's deadline passed before it was computed."""

    reason = "deadline_exceeded"


class Cancelled(GliclassError):
    """The item was cancelled by its caller before it was computed."""

    reason = "cancelled"


class NotReady(GliclassError):
    """The pool is not warm yet, or is shutting down."""

    reason = "not_ready"


class BatchFailed(GliclassError):
    """The forward pass of the batch this item was in raised; other batches are unaffected."""

    reason = "batch_failed"
