"""Session routes (`session = "key"`): each record extends the conversation its key names.

A record's text is appended to the session of its key through the core's `SessionService`, at bulk
priority, in partition order (appends to one session are applied in submission order). The session
id holds the topic, the partition, an assignment generation and the key, so a conversation lives on
the one worker that owns its partition, and a session left over from an earlier assignment is never
continued (it expires by the store's own bounds).

Rebalances: when a partition is revoked, lost or rewound, its sessions are closed. When a partition
is (re)assigned and its first record arrives at offset `s`, the records before `s` were processed by
another owner (or by this one before a rewind): the window `[s - session_lookback, s)` is read back
once (`LookbackReader`) and kept per key (bounded in records and characters). When a key is first
seen, its kept records are replayed into the session (results discarded) before the record's own
append, so every output equals what one uninterrupted session gives, as long as the conversation's
earlier records lie within the window. Records the worker dead-letters (undecodable, no labels, no
key, too large) are skipped when read back too, as they were when first processed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message

from gliclass_core.config import LabelSet
from gliclass_core.errors import InvalidInput, NotReady, Overloaded, UnsupportedModel
from gliclass_core.runtime.calls import CallContext
from gliclass_core.runtime.sessions.service import SessionAppend, SessionService
from gliclass_core.runtime.sessions.strategies import Strategy
from gliclass_core.types import ClassifyItem
from worker.codec import BadEvent, carry_headers, check_record_size, decode_event, record_headers
from worker.config import Route
from worker.consumer import TP, LookbackReader
from worker.routes import resolve
from worker.state import SessionSlot, Slot, WorkerStats

log = logging.getLogger("gliclass.worker")

#: How long reading back one partition's window may take before the partition is re-read.
LOOKBACK_TIMEOUT_S = 30.0
#: The chunk that closes a session: no text (nothing appended, nothing scored), its last labels.
_CLOSE = ClassifyItem("", ())


class SessionsUnsupported(RuntimeError):
    """A session route runs on a model that keeps no sessions: the worker stops, naming the route."""


def session_key(key: bytes | None) -> str:
    """The record key as the conversation's name. Raises BadEvent when there is none to use."""
    if not key:
        raise BadEvent("missing_key", 'the route has session = "key" and this record has no key')
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadEvent("invalid_key", f"the record key is not valid UTF-8: {exc}") from exc


@dataclass
class _Partition:
    """A session partition's state for one assignment."""

    generation: int
    loaded: bool = False  # its look-back window has been read
    #: key -> items of the records before the first one consumed (oldest first), until the key is seen.
    history: dict[str, list[ClassifyItem]] = field(default_factory=dict)
    #: Session ids opened in this assignment (closed on revoke), least recently used first.
    opened: OrderedDict[str, None] = field(default_factory=OrderedDict)


class SessionFeed:
    """Session routes' bookkeeping for the worker loop (one thread)."""

    def __init__(
        self,
        service: SessionService,
        reader: LookbackReader,
        context: CallContext,
        max_record_bytes: Callable[[], int],
        bulk_limit: Callable[[], int] = lambda: 1 << 30,
        stats: WorkerStats | None = None,
    ) -> None:
        self.service, self.reader, self.context = service, reader, context
        self.stats = stats or WorkerStats()
        self.max_record_bytes = max_record_bytes
        self.bulk_limit = bulk_limit
        self.parts: dict[TP, _Partition] = {}
        self._generation = 0

    # ---------------------------------------------------------------- assignment

    def assign(self, tp: TP) -> None:
        """Start a session partition afresh (assigned or rewound); look-back waits for its first record."""
        self._generation += 1
        self.parts[tp] = _Partition(self._generation)

    def drop(self, tp: TP) -> None:
        """Close the partition's sessions (revoked, lost, rewound or closing)."""
        part = self.parts.pop(tp, None)
        if part is None or not part.opened:
            return
        # An empty chunk with `close` ends each session behind its queued appends, without waiting
        # (`close()` would block the rebalance once per session). Only memory depends on it: a new
        # assignment names new sessions, and the store's own bounds free whatever is not closed.
        closes = [SessionAppend(sid, _CLOSE, close=True) for sid in part.opened]
        limit = max(1, min(self.service.settings.max_per_call, self.bulk_limit() // 4))
        try:
            for begin in range(0, len(closes), limit):
                self.service.submit(closes[begin : begin + limit], self.context)
        except Exception as exc:
            log.warning("closing the sessions of %s: %s (they expire by the store's bounds)", tp, exc)

    def needs_lookback(self, tp: TP) -> bool:
        """True until the partition's window is read (a reload may have made it a session route just now)."""
        part = self.parts.get(tp)
        if part is None:
            self.assign(tp)
            return True
        return not part.loaded

    def load(self, tp: TP, start: int, route: Route, label_sets: Mapping[str, LabelSet]) -> bool:
        """Read back `[start - session_lookback, start)` of `tp` and keep its items per key.

        False when it could not be read in time (the caller re-reads the partition from `start`).
        """
        if tp not in self.parts:
            self.assign(tp)
        part = self.parts[tp]
        window: deque[tuple[str, ClassifyItem]] = deque()
        chars = 0
        first = max(0, start - route.session_lookback)
        try:
            for msg in self.reader.read(tp, first, start, LOOKBACK_TIMEOUT_S):
                entry = self._replayable(msg, route, label_sets)
                if entry is None:
                    continue
                window.append(entry)
                chars += len(entry[1].text)
                while chars > route.session_lookback_chars and window:
                    chars -= len(window.popleft()[1].text)  # the oldest go first
        except Exception as exc:
            log.warning(
                "reading back %s before offset %d failed (%s); re-reading the partition", tp, start, exc
            )
            return False
        for key, item in window:
            part.history.setdefault(key, []).append(item)
        part.loaded = True
        self.stats.session_lookback_records += len(window)
        log.info(
            "%s: read back offsets %d..%d for sessions: %d records of %d conversations",
            tp, first, start, len(window), len(part.history),
        )  # fmt: skip
        return True

    def _replayable(
        self, msg: Message, route: Route, label_sets: Mapping[str, LabelSet]
    ) -> tuple[str, ClassifyItem] | None:
        """(key, item) of a read-back record, or None when the loop would have dead-lettered it."""
        try:
            key, value = msg.key(), msg.value()
            check_record_size(key, value, carry_headers(record_headers(msg)), self.max_record_bytes())
            event = decode_event(value, key=key)
            item = resolve(event, route, label_sets).item
            return session_key(key), item
        except BadEvent:
            return None
        except Exception:  # as `accept` does: a failure nobody foresaw dead-lettered the record
            return None

    # ---------------------------------------------------------------- records

    def open(self, slot: Slot, item: ClassifyItem) -> SessionSlot:
        """The record's session part: its own append, after the conversation's replay on first sight.

        Raises BadEvent for a record without a usable key.
        """
        key = session_key(slot.key)
        part = self.parts[slot.tp]
        session_id = f"kafka:{slot.tp[0]}:{slot.tp[1]}:{part.generation}:{key}"
        strategy = self.strategy(slot.route)
        replay = part.history.pop(key, [])
        self.stats.session_replayed += len(replay)
        pending = [SessionAppend(session_id, earlier, strategy) for earlier in replay]
        pending.append(SessionAppend(session_id, item, strategy))
        part.opened[session_id] = None
        part.opened.move_to_end(session_id)
        while len(part.opened) > self.service.settings.limits.max_sessions:
            part.opened.popitem(last=False)  # the store holds no more than that: it dropped them already
        return SessionSlot(session_id, key, pending, rebuilt=bool(replay))

    def strategy(self, route: Route) -> Strategy:
        """The route's strategy, else the [sessions] default (given on every append, so a rebuilt
        session and the original agree whichever owner started it)."""
        return route.strategy or self.service.settings.default_strategy

    def submit(self, slots: list[Slot]) -> list[Slot]:
        """Submit the slots' pending appends in order; return the slots left waiting (service busy).

        Refused appends: the record's own is dead-lettered with the reason; a replayed one is skipped
        (the record was dead-lettered when first processed for the same reason).
        """
        # Session appends count against the queue's bulk share: stay well below it, as items do.
        limit = max(1, min(self.service.settings.max_per_call, self.bulk_limit() // 4))
        entries = [
            (slot, append) for slot in slots if slot.session is not None for append in slot.session.pending
        ]
        for begin in range(0, len(entries), limit):
            chunk = entries[begin : begin + limit]
            try:
                self._submit_chunk(chunk)
            except (Overloaded, NotReady) as exc:
                log.debug("sessions busy (%s); %d records wait", exc, len(slots))
                return [s for s in slots if s.session is not None and s.session.pending and s.bad is None]
        return []

    def _submit_chunk(self, chunk: list[tuple[Slot, SessionAppend]]) -> None:
        try:
            futures = self.service.submit([append for _, append in chunk], self.context)
        except UnsupportedModel as exc:
            raise SessionsUnsupported(self.unsupported_message(chunk[0][0].route, exc)) from exc
        except (Overloaded, NotReady):
            raise
        except Exception as exc:
            if len(chunk) > 1:  # find the append that caused it
                for entry in chunk:
                    self._submit_chunk([entry])
                return
            slot, _ = chunk[0]
            assert slot.session is not None
            slot.session.pending.pop(0)
            if not slot.session.pending and slot.bad is None:
                reason = "invalid_input" if isinstance(exc, InvalidInput) else "internal_error"
                slot.bad = BadEvent(reason, f"session append refused: {exc}")
            return
        for (slot, _), future in zip(chunk, futures):
            assert slot.session is not None
            slot.session.pending.pop(0)
            if not slot.session.pending:
                slot.session.future = future
                slot.attempts += 1

    def check_supported(self, routes: Sequence[Route]) -> None:
        """Raise SessionsUnsupported, naming the first session route, when the loaded model keeps none."""
        sessions = [r for r in routes if r.session is not None]
        if sessions and not self.service.supported:
            raise SessionsUnsupported(self.unsupported_message(sessions[0]))

    @staticmethod
    def unsupported_message(route: Route, exc: BaseException | None = None) -> str:
        detail = f" ({exc})" if exc is not None else ""
        return (
            f'route {route.input!r} has session = "key", but the loaded model keeps no sessions{detail}; '
            "sessions need a decoder-kv checkpoint on a causal backbone with a KV cache (Qwen3, Qwen3.5)"
        )


def session_failure(session: SessionSlot) -> BadEvent | None:
    """The dead letter of a record whose append failed (None when it succeeded)."""
    future = session.future
    assert future is not None
    exc = future.exception() if not future.cancelled() else NotReady("cancelled")
    if exc is None:
        return None
    return BadEvent(getattr(exc, "reason", "error"), f"session append failed: {exc}")
