"""Session messages from every edge: one neutral request, one resolver, unary and streamed answering.

gRPC `ClassifySession` and HTTP's `/v1/sessions` routes decode their wire format into
`SessionRequest`s; `resolve_session` turns one into the `SessionAppend` the sessions service takes
(labels, label set and decision settings through the item resolver, the strategy parsed once, the
limits of `[sessions]` checked with typed errors naming the field). `append_session` answers one
message, `answer_sessions` a stream of them in order with a bounded number unanswered, each message
failing alone. Nothing here knows a transport.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from gliclass_core.auth import current_caller
from gliclass_core.config import LabelSet
from gliclass_core.errors import InvalidInput, NotReady, UnsupportedModel
from gliclass_core.modeling.decoder_kv_config import NO_KV_CACHE
from gliclass_core.processing.validation import lone_surrogate_at
from gliclass_core.runtime.bridge import failure
from gliclass_core.runtime.calls import CallContext, wait_until_done
from gliclass_core.runtime.sessions.service import SessionAppend, SessionOutcome, SessionSettings
from gliclass_core.runtime.sessions.store import SessionUpdate
from gliclass_core.runtime.sessions.strategies import parse_strategy
from gliclass_core.service.contract import ClassifyService
from gliclass_core.service.request import ItemRequest, RequestLimits, resolve_item
from gliclass_core.service.stream import InFlightGate, Put, StreamCounters, answer_in_order
from gliclass_core.types import ClassifyItem

Tag = TypeVar("Tag")

#: Stands in for the chunk while labels are resolved (the chunk has its own limits, checked here).
_PLACEHOLDER_TEXT = "-"


@dataclass(frozen=True)
class SessionRequest:
    """One session message as a client sent it, decoded from any wire format; None means "not given"."""

    session_id: str
    text: str = ""
    labels: tuple[str, ...] = ()
    label_set: str | None = None
    strategy: str | None = None
    threshold: float | None = None
    multi_label: bool | None = None
    top_k: int | None = None
    prompt: str | None = None
    close: bool = False

    @property
    def close_only(self) -> bool:
        """True for a message that only closes its session (no chunk, no labels)."""
        return self.close and not self.text and not self.labels and self.label_set is None


def resolve_session(
    request: SessionRequest,
    label_sets: Mapping[str, LabelSet],
    limits: RequestLimits,
    settings: SessionSettings,
) -> SessionAppend:
    """Resolve one message into the append the sessions service takes; InvalidInput names the field."""
    check_session_id(request.session_id, settings)
    text = request.text
    if not isinstance(text, str):
        raise InvalidInput(f"must be a string, got {type(text).__name__}", field="text")
    if len(text) > settings.limits.max_chunk_chars:
        raise InvalidInput(
            f"is {len(text)} characters; at most {settings.limits.max_chunk_chars} per chunk", field="text"
        )
    at = lone_surrogate_at(text)
    if at is not None:
        raise InvalidInput(f"is not valid Unicode (a lone surrogate at {at})", field="text")
    strategy = None if request.strategy is None else parse_strategy(request.strategy)
    if request.labels or request.label_set:
        # The item resolver owns labels, label sets and decision settings; the chunk was checked above.
        resolved = resolve_item(
            ItemRequest(
                text=_PLACEHOLDER_TEXT,
                labels=tuple(request.labels),
                label_set=request.label_set,
                threshold=request.threshold,
                multi_label=request.multi_label,
                top_k=request.top_k,
                prompt=request.prompt,
            ),
            label_sets,
            limits,
        )
        item = dataclasses.replace(resolved, text=text)
    else:
        given = [
            name
            for name in ("threshold", "multi_label", "top_k", "prompt")
            if getattr(request, name) is not None
        ]
        if given:
            raise InvalidInput(
                "applies with 'labels' or 'label_set' only (a message without them reuses the session's)",
                field=given[0],
            )
        item = ClassifyItem(text, ())  # the session's previous labels and settings apply
    return SessionAppend(scoped_id(request.session_id), item, strategy, close=bool(request.close))


def scoped_id(session_id: str) -> str:
    """The id the service keeps a client's session under: `api:<caller>:<id>`.

    The caller is the API key's fingerprint (`anonymous` with authentication off), so a client
    reaches only the sessions it opened with its own key, never another key's nor a Kafka route's
    (`kafka:...`). Answers carry the client's own id.
    """
    return f"api:{current_caller.get().name}:{session_id}"


def check_session_id(session_id: object, settings: SessionSettings) -> str:
    """A usable session id, or InvalidInput naming `session_id`."""
    if not isinstance(session_id, str) or not session_id.strip():
        raise InvalidInput("must be a non-empty string", field="session_id")
    limit = settings.limits.max_session_id_length
    if len(session_id) > limit:
        raise InvalidInput(f"is {len(session_id)} characters; at most {limit}", field="session_id")
    if lone_surrogate_at(session_id) is not None:
        raise InvalidInput("is not valid Unicode (a lone surrogate)", field="session_id")
    return session_id


def require_sessions(service: ClassifyService) -> None:
    """Raise NotReady while loading, UnsupportedModel for a model that keeps no sessions."""
    if service.sessions.supported:
        return
    if not service.ready:
        raise NotReady("the model is not loaded yet")
    info = service.info
    if info.extra.get("sessions") == "false":  # decoder-kv on a bidirectional backbone: no KV cache
        raise UnsupportedModel(NO_KV_CACHE.format(backbone=info.extra.get("backbone", "?")))
    raise UnsupportedModel(
        f"streaming sessions need a decoder-kv checkpoint; this model is {service.info.architecture!r}"
    )


async def close_session(service: ClassifyService, session_id: str, context: CallContext) -> bool:
    """Close a session after what is queued for it, within the call's deadline; False when it was not open."""
    require_sessions(service)
    check_session_id(session_id, service.sessions.settings)
    return await service.sessions.close_async(scoped_id(session_id), context)


async def append_session(
    service: ClassifyService, request: SessionRequest, limits: RequestLimits, context: CallContext
) -> SessionOutcome:
    """Answer one message (raises InvalidInput, UnsupportedModel, NotReady, Overloaded as it applies)."""
    require_sessions(service)
    append = resolve_session(request, service.label_sets, limits, service.sessions.settings)
    if request.close_only:
        return SessionOutcome(None, None, closed=await close_session(service, request.session_id, context))
    (outcome,) = await service.sessions.append([append], context)
    return outcome


@dataclass(frozen=True)
class SessionAnswer(Generic[Tag]):
    """One message's answer: the edge's tag, its session id, the outcome and its arrival (perf_counter)."""

    tag: Tag
    session_id: str
    outcome: SessionOutcome
    received: float


@dataclass
class _Pending(Generic[Tag]):
    tag: Tag
    session_id: str
    received: float
    ready: SessionOutcome | None = None
    future: Future[SessionUpdate] | None = None
    closes: bool = False


async def answer_sessions(
    service: ClassifyService,
    messages: AsyncIterator[tuple[Tag, SessionRequest | InvalidInput]],
    context: CallContext,
    limits: RequestLimits,
    max_in_flight: int,
    counters: StreamCounters | None = None,
) -> AsyncGenerator[SessionAnswer[Tag], None]:
    """Answer every message in order (at most `max_in_flight` unanswered); a read error ends the stream.

    `messages` holds each decoded message, or the InvalidInput of one the edge could not decode
    (answered with it, in its place). A stream names at most `[sessions] max_per_call` sessions it
    has not closed (a message naming one more fails alone with InvalidInput naming `session_id`;
    closing one frees its place), which also bounds what the stream tracks.
    """
    counters = counters if counters is not None else StreamCounters()
    gate = InFlightGate(max_in_flight)
    stats = counters
    open_ids: set[str] = set()  # the stream's sessions not closed yet: bounded by max_per_call

    async def read(put: Put[_Pending[Tag]]) -> None:
        await _read(service, messages, context, limits, gate, put, stats, open_ids)

    async def settle(entry: _Pending[Tag]) -> SessionOutcome:
        if entry.ready is not None:
            return entry.ready
        outcome = await _outcome(entry, context)
        if outcome.closed:  # its place frees once the close is done, not when it was asked for
            open_ids.discard(entry.session_id)
        return outcome

    def drop(entry: _Pending[Tag]) -> None:
        if entry.future is not None:
            entry.future.cancel()

    async with contextlib.aclosing(answer_in_order(read, settle, drop, gate, counters)) as answers:
        async for entry, outcome in answers:
            yield SessionAnswer(entry.tag, entry.session_id, outcome, entry.received)


async def _outcome(entry: _Pending[Tag], context: CallContext) -> SessionOutcome:
    assert entry.future is not None  # an entry is either ready or submitted
    await wait_until_done([entry.future], context)
    error = failure(entry.future)
    update = entry.future.result() if error is None else None
    return SessionOutcome(update, error, closed=entry.closes and error is None)


async def _read(
    service: ClassifyService,
    messages: AsyncIterator[tuple[Tag, SessionRequest | InvalidInput]],
    context: CallContext,
    limits: RequestLimits,
    gate: InFlightGate,
    put: Put[_Pending[Tag]],
    counters: StreamCounters,
    open_ids: set[str],
) -> None:
    """Read messages while the gate allows, submit each, put them for answering in order."""
    async for tag, request in messages:
        await gate.acquire(1)
        counters.items_received += 1
        put(await _submit_one(service, tag, request, context, limits, open_ids))


async def _submit_one(
    service: ClassifyService,
    tag: Tag,
    request: SessionRequest | InvalidInput,
    context: CallContext,
    limits: RequestLimits,
    open_ids: set[str],
) -> _Pending[Tag]:
    received = time.perf_counter()
    if isinstance(request, InvalidInput):
        return _Pending(tag, "", received, ready=SessionOutcome(None, request))
    session_id = request.session_id if isinstance(request.session_id, str) else ""
    try:
        require_sessions(service)
        settings = service.sessions.settings
        append = resolve_session(request, service.label_sets, limits, settings)
        if request.close_only:
            closed = await close_session(service, session_id, context)
            open_ids.discard(session_id)
            return _Pending(tag, session_id, received, ready=SessionOutcome(None, None, closed=closed))
        if session_id not in open_ids and len(open_ids) >= settings.max_per_call:
            raise InvalidInput(
                f"this stream has {len(open_ids)} sessions open; at most {settings.max_per_call} per call "
                "(close one first)",
                field="session_id",
            )
        (future,) = service.sessions.submit([append], context)
    except Exception as exc:
        return _Pending(tag, session_id, received, ready=SessionOutcome(None, exc))
    open_ids.add(session_id)  # until its close is done (`answer_sessions`)
    return _Pending(tag, session_id, received, future=future, closes=append.close)
