"""The sessions front door every edge uses: `SessionService`, what it takes and what it answers.

An edge decodes its wire format into `SessionAppend`s (the chunk and its labels resolved as an
ordinary item's are, by `gliclass_core.service.request`), calls `submit` or `append` with the call's
`CallContext`, and encodes the `SessionOutcome`s. Appends to the same session are applied in the
order they were submitted, whichever call or edge they came from.

Settings come from the `[sessions]` table (`SessionSettings.from_section`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from gliclass_core.errors import ConfigError, InvalidInput
from gliclass_core.runtime.calls import CallContext
from gliclass_core.runtime.sessions.store import SessionLimits, SessionStats, SessionUpdate
from gliclass_core.runtime.sessions.strategies import Strategy, parse_strategy
from gliclass_core.types import ClassifyItem

#: Sessions one call may append to at once (`[sessions] max_per_call`).
DEFAULT_MAX_PER_CALL = 256


@dataclass(frozen=True)
class SessionAppend:
    """One chunk for one session.

    `item.text` is the chunk (may be empty: nothing is appended, nothing fires); `item.labels`,
    threshold, multi_label, top_k, prompt and examples are how the session is scored when its
    strategy fires. Empty `item.labels` reuse the labels of the session's previous append (an
    InvalidInput naming `labels` when it has none). `strategy` None keeps the session's (or the
    service's default for a new session). `close` ends the session after this chunk.
    """

    session_id: str
    item: ClassifyItem
    strategy: Strategy | None = None
    close: bool = False


@dataclass(frozen=True)
class SessionOutcome:
    """How one append ended: its update (`closed` set when it closed the session) or its error."""

    update: SessionUpdate | None
    error: BaseException | None
    closed: bool = False


@dataclass(frozen=True)
class SessionSettings:
    """The `[sessions]` table: the store's bounds, the default strategy and the per-call limit."""

    limits: SessionLimits = field(default_factory=SessionLimits)
    default_strategy: Strategy = field(default_factory=Strategy)
    max_per_call: int = DEFAULT_MAX_PER_CALL

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> SessionSettings:
        """Parse `[sessions]` (keys: the `SessionLimits` fields, `strategy`, `max_per_call`)."""
        known = set(SessionLimits.__dataclass_fields__) | {"strategy", "max_per_call"}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"[sessions] has unknown keys: {', '.join(unknown)}")
        limits_kwargs = {k: v for k, v in section.items() if k in SessionLimits.__dataclass_fields__}
        try:
            limits = SessionLimits(**limits_kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[sessions]: {exc}") from exc
        try:
            strategy = parse_strategy(section.get("strategy", "every_chunk"))
        except InvalidInput as exc:
            raise ConfigError(f"[sessions] strategy: {exc}") from exc
        max_per_call = section.get("max_per_call", DEFAULT_MAX_PER_CALL)
        if isinstance(max_per_call, bool) or not isinstance(max_per_call, int) or max_per_call < 1:
            raise ConfigError(f"[sessions] max_per_call must be a positive integer, got {max_per_call!r}")
        return cls(limits, strategy, max_per_call)


@runtime_checkable
class SessionService(Protocol):
    """Streaming sessions as the edges see them (the runtime's `sessions`)."""

    @property
    def settings(self) -> SessionSettings:
        """The bounds and defaults sessions run under."""
        ...

    @property
    def supported(self) -> bool:
        """True when the loaded model can keep sessions (a decoder-kv checkpoint); False before load."""
        ...

    def submit(self, appends: Sequence[SessionAppend], context: CallContext) -> list[Future[SessionUpdate]]:
        """Queue appends; one future per append, in order.

        Raises (queuing nothing) InvalidInput naming the field (more than `max_per_call` appends,
        a bad session id, chunk or strategy), UnsupportedModel when the model keeps no sessions,
        NotReady before the model is loaded or after shutdown began, Overloaded when full
        (never for a call of bare closes: appends with `close` and no text, which free memory).
        """
        ...

    async def append(self, appends: Sequence[SessionAppend], context: CallContext) -> list[SessionOutcome]:
        """Submit and await every append, honouring the context's deadline and cancellation."""
        ...

    def close(self, session_id: str) -> bool:
        """End a session now (after appends already queued for it); False when it was not open."""
        ...

    async def close_async(self, session_id: str, context: CallContext) -> bool:
        """`close` for an event loop, under the call's deadline and cancellation (DeadlineExceeded /
        Cancelled when it ends first: the session is then closed later, or not at all)."""
        ...

    def stats(self) -> SessionStats:
        """A snapshot of the sessions' counters and sizes (all stores summed)."""
        ...
