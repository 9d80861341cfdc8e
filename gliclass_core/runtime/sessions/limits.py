"""What bounds a `SessionStore` (`SessionLimits`), what it counts (`SessionStats`), and the checks of
a session id and a chunk that every way in (the store, the service's submit) applies alike."""

from __future__ import annotations

from dataclasses import dataclass

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.packing import MARKER_TEXTS
from gliclass_core.processing.validation import lone_surrogate_at

OVERFLOW_MODES = ("trim", "refuse")


@dataclass(frozen=True)
class SessionLimits:
    """Bounds of a `SessionStore` (bytes are the cached tensors' own sizes)."""

    max_bytes: int = 512 * 1024 * 1024
    host_bytes: int = 1024 * 1024 * 1024
    idle_ttl_s: float = 900.0
    max_sessions: int = 10_000
    max_chunk_chars: int = 65_536
    max_chunk_tokens: int = 4096
    max_cached_tokens: int | None = None  # None: the model's max_length
    max_session_id_length: int = 256
    #: Past `max_cached_tokens`: "trim" keeps the session's last tokens (the reference's
    #: `max_cache_len`); "refuse" fails the chunk with InvalidInput naming `text` instead.
    overflow: str = "trim"

    def __post_init__(self) -> None:
        for name in (
            "max_bytes",
            "max_sessions",
            "max_chunk_chars",
            "max_chunk_tokens",
            "max_session_id_length",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SessionLimits.{name} must be a positive integer, got {value!r}")
        if self.overflow not in OVERFLOW_MODES:
            raise ValueError(f"SessionLimits.overflow must be one of {OVERFLOW_MODES}, got {self.overflow!r}")
        if self.max_cached_tokens is not None and (
            isinstance(self.max_cached_tokens, bool)
            or not isinstance(self.max_cached_tokens, int)
            or self.max_cached_tokens < 1
        ):
            raise ValueError(
                f"SessionLimits.max_cached_tokens must be a positive integer, got {self.max_cached_tokens!r}"
            )
        if not self.idle_ttl_s > 0:
            raise ValueError(f"SessionLimits.idle_ttl_s must be positive, got {self.idle_ttl_s!r}")


@dataclass
class SessionStats:
    """Counters of a store (monotonic) and its current size (`sessions`, `bytes_cached`, `cached_tokens`).

    `batches` counts the store's batched calls (`append_many`, one per session batch of the
    scheduler) and `batch_appends` the appends they carried: their ratio is the mean batch size.
    """

    created: int = 0
    appends: int = 0
    scored: int = 0
    closed: int = 0
    expired: int = 0
    offloaded: int = 0
    dropped: int = 0
    sessions: int = 0
    bytes_cached: int = 0
    cached_tokens: int = 0
    tokens_computed: int = 0
    batches: int = 0
    batch_appends: int = 0

    def add(self, other: SessionStats) -> SessionStats:
        """The field-wise sum of two snapshots (stores of several replicas)."""
        return SessionStats(**{k: getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__})


#: Characters the service's own prefix may add to a client's id (`api:<caller>:`, `kafka:<topic>:...`):
#: the edges hold a client's id to `max_session_id_length`, the store holds the prefixed id to this more.
SCOPE_CHARS = 64


def check_session_id(limits: SessionLimits, session_id: object) -> None:
    """InvalidInput naming `session_id` unless it is a non-empty, valid string within the limit
    (`max_session_id_length` plus `SCOPE_CHARS` for the prefix the service puts before a client's id)."""
    if not isinstance(session_id, str) or not session_id.strip():
        raise InvalidInput("must be a non-empty string", field="session_id")
    limit = limits.max_session_id_length + SCOPE_CHARS
    if len(session_id) > limit:
        raise InvalidInput(f"is {len(session_id)} characters; at most {limit}", field="session_id")
    if lone_surrogate_at(session_id) is not None:
        raise InvalidInput("is not valid Unicode (a lone surrogate)", field="session_id")


def check_chunk(limits: SessionLimits, text: object) -> None:
    """InvalidInput naming `text` unless it is a valid string within the limit and free of markers."""
    if not isinstance(text, str):
        raise InvalidInput(f"must be a string, got {type(text).__name__}", field="text")
    if len(text) > limits.max_chunk_chars:
        raise InvalidInput(f"is {len(text)} characters; at most {limits.max_chunk_chars}", field="text")
    at = lone_surrogate_at(text)
    if at is not None:
        raise InvalidInput(f"is not valid Unicode (a lone surrogate at {at})", field="text")
    for marker in MARKER_TEXTS:
        if marker in text:
            raise InvalidInput(f"must not contain the reserved marker {marker}", field="text")
