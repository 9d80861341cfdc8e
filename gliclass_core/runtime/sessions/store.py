"""Streaming sessions: chunks extend a cached decoder state, scored when the session's strategy fires.

`SessionStore(model).append(session_id, chunk, labels)` appends the chunk's tokens to the session's
`KVState` (only `[prompt][examples]text` is cached; the label block is scored against it and never
kept) and returns the labels' scores when the session's `Strategy` fires. The same chunk sequence
gives the same scores as the reference's `StreamingZeroShotClassificationPipeline`.

Bounds (`SessionLimits`): every session's cache counts against `max_bytes`; past it the least
recently used sessions move to host memory (when the model runs on a GPU, up to `host_bytes`), then
are dropped, each counted in `SessionStats`. A session idle for `idle_ttl_s` expires, `close` ends
one at once, `max_cached_tokens` keeps only a session's last tokens (the reference's
`max_cache_len`), past `max_sessions` the least recently used session is dropped, and chunk size
and id length are limited with typed errors. A
dropped or expired session starts afresh on its next chunk; the result says so (`new_session`).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gliclass_core.decoder_kv_classifier import DecoderKVClassifier
from gliclass_core.errors import InvalidInput, UnsupportedModel
from gliclass_core.model import Model
from gliclass_core.modeling.decoder_kv_config import NO_KV_CACHE
from gliclass_core.modeling.kv_batch import extend_many, score_cached_many
from gliclass_core.modeling.kv_state import KVState
from gliclass_core.processing import predictions
from gliclass_core.processing.validation import validate_item
from gliclass_core.runtime.sessions.limits import SessionLimits, SessionStats, check_chunk, check_session_id
from gliclass_core.runtime.sessions.strategies import Strategy
from gliclass_core.types import ClassifyItem, EncodedPass, Example, Prediction, PreparedItem


@dataclass(frozen=True)
class SessionUpdate:
    """What one append did: scores when the strategy fired, and the session's size after it."""

    session_id: str
    triggered: bool
    prediction: Prediction | None
    cached_tokens: int
    tokens_added: int
    new_session: bool


@dataclass
class _Session:
    prefix: str
    strategy: Strategy
    last_used: float
    state: KVState | None = None
    accumulated: int = 0
    on_host: bool = False
    nbytes: int = 0
    ntokens: int = 0
    item: ClassifyItem | None = None  # how it was last scored: an append without labels reuses it


class SessionStore:
    """Sessions of one decoder-kv model on one device (thread-safe; calls run one at a time)."""

    def __init__(self, model: Model, limits: SessionLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if not isinstance(model, DecoderKVClassifier):
            raise UnsupportedModel(
                f"streaming sessions need a decoder-kv checkpoint; this model is {model.info.architecture!r}"
            )
        if model.network.cfg.bidirectional:
            raise UnsupportedModel(NO_KV_CACHE.format(backbone=model.network.cfg.backbone))
        self.model = model
        self.limits = limits or SessionLimits()
        self.max_cached_tokens = self.limits.max_cached_tokens or model.max_length
        self.stats = SessionStats()
        self._clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._offload = str(model.device).startswith("cuda")

    def append(
        self,
        session_id: str,
        text: str,
        labels: Sequence[str],
        *,
        strategy: Strategy | None = None,
        threshold: float | Mapping[str, float] = 0.5,
        multi_label: bool = True,
        top_k: int | None = None,
        prompt: str | None = None,
        examples: Sequence[Example] = (),
    ) -> SessionUpdate:
        """Append `text` to the session (created on first use) and score `labels` if its strategy fires.

        `prompt` and `examples` are read when the session starts (a different prompt or examples for a
        running session is an error: close it first); a `strategy` given later replaces the session's.
        Raises InvalidInput naming the field.
        """
        return self.append_many(
            [session_id], [text], labels, strategies=[strategy], threshold=threshold, multi_label=multi_label,
            top_k=top_k, prompt=prompt, examples=examples,
        )[0]  # fmt: skip

    def append_many(
        self,
        session_ids: Sequence[str],
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        strategies: Sequence[Strategy | None] | None = None,
        threshold: float | Mapping[str, float] = 0.5,
        multi_label: bool = True,
        top_k: int | None = None,
        prompt: str | None = None,
        examples: Sequence[Example] = (),
    ) -> list[SessionUpdate]:
        """`append` for several distinct sessions at once: their decoder calls run as one batch."""
        if not isinstance(texts, Sequence) or isinstance(texts, str):
            raise InvalidInput("must give one chunk per session id", field="text")
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise InvalidInput("must be a list of strings", field="labels")
        if isinstance(examples, str) or not isinstance(examples, Sequence):
            raise InvalidInput("must be a list of examples", field="examples")
        items = [
            ClassifyItem(text, tuple(labels), threshold, multi_label, top_k, prompt, tuple(examples))
            for text in texts
        ]
        return self.append_items(session_ids, items, strategies)

    def append_items(
        self,
        session_ids: Sequence[str],
        items: Sequence[ClassifyItem],
        strategies: Sequence[Strategy | None] | None = None,
    ) -> list[SessionUpdate]:
        """`append_many` where each session has its own item: `item.text` is its chunk, the item's
        labels and options are how it is scored (they may differ between sessions of one batch)."""
        if isinstance(session_ids, str) or not isinstance(session_ids, Sequence) or not session_ids:
            raise InvalidInput("must be a non-empty list of session ids", field="session_ids")
        if not isinstance(items, Sequence) or len(items) != len(session_ids):
            raise InvalidInput("must give one chunk per session id", field="text")
        chosen = list(strategies) if strategies is not None else [None] * len(session_ids)
        if len(chosen) != len(session_ids):
            raise InvalidInput("must give one strategy (or None) per session id", field="strategy")
        for sid, item, strategy in zip(session_ids, items, chosen):
            if not isinstance(item, ClassifyItem):
                raise InvalidInput(f"expected a ClassifyItem, got {type(item).__name__}", field="text")
            check_session_id(self.limits, sid)
            check_chunk(self.limits, item.text)
            if strategy is not None and not isinstance(strategy, Strategy):
                raise InvalidInput("must be a Strategy", field="strategy")
        if len(set(session_ids)) != len(session_ids):
            raise InvalidInput("must be distinct within one call", field="session_ids")
        if len(session_ids) > self.limits.max_sessions:
            raise InvalidInput(
                f"{len(session_ids)} sessions; at most {self.limits.max_sessions}", field="session_ids"
            )
        texts = [item.text for item in items]
        # Labels, threshold, prompt and examples are checked as a classification item's are (the
        # chunk may be empty, which an item's text may not: a placeholder stands in for it).
        items = [dataclasses.replace(validate_item(dataclasses.replace(i, text="-")), text="") for i in items]
        prefixes = [self.model.prefix(item.prompt, item.examples) for item in items]
        with self._lock:
            now = self._clock()
            self._expire(now)
            for sid, prefix in zip(session_ids, prefixes):
                session = self._sessions.get(sid)
                if session is not None and session.state is not None and prefix and prefix != session.prefix:
                    raise InvalidInput(
                        "differs from the session's; close the session to change it", field="prompt"
                    )
            chunks = []
            for sid, text, prefix in zip(session_ids, texts, prefixes):
                session = self._sessions.get(sid)
                head = prefix if session is None or session.state is None else ""
                ids = self.model.tokens(head + text) if text else []
                if len(ids) > self.limits.max_chunk_tokens:
                    raise InvalidInput(
                        f"{len(ids)} tokens; at most {self.limits.max_chunk_tokens} per chunk", field="text"
                    )
                self._check_room(session, len(ids))
                chunks.append(ids)
            sessions, fresh = [], []
            batch = set(session_ids)
            for sid, strategy, item, prefix in zip(session_ids, chosen, items, prefixes):
                session = self._sessions.get(sid)
                fresh.append(session is None)
                if session is None:
                    # The least recently used makes room.
                    while len(self._sessions) >= self.limits.max_sessions:
                        self._drop(next(k for k in self._sessions if k not in batch))
                    session = _Session(prefix, strategy or Strategy(), now)
                    self._sessions[sid] = session
                    self.stats.created += 1
                # Nothing cached yet: the prefix may still change, as in the reference.
                if session.state is None:
                    session.prefix = prefix
                if strategy is not None and strategy != session.strategy:
                    session.strategy, session.accumulated = strategy, 0
                self._sessions.move_to_end(sid)
                session.last_used = now
                session.item = item
                sessions.append(session)
            self.stats.appends += len(sessions)
            self.stats.batches += 1
            self.stats.batch_appends += len(sessions)
            self._extend([(s, ids) for s, ids in zip(sessions, chunks) if ids])
            fired = []
            for session, ids, text in zip(sessions, chunks, texts):
                fire, session.accumulated = session.strategy.fires(session.accumulated, len(ids), text)
                fired.append(fire and session.state is not None)
            scored = iter(self._score([(s, i) for s, i, f in zip(sessions, items, fired) if f]))
            updates = []
            for sid, session, ids, fire, new in zip(session_ids, sessions, chunks, fired, fresh):
                self._account(session)
                cached = session.state.cached_length if session.state is not None else 0
                updates.append(
                    SessionUpdate(sid, fire, next(scored) if fire else None, cached, len(ids), new)
                )
            self._enforce_budget(keep=batch)
            return updates

    def _check_room(self, session: _Session | None, added: int) -> None:
        """With `overflow = "refuse"`, InvalidInput naming `text` when the chunk would take the session
        past `max_cached_tokens` (with "trim" the cache keeps its last tokens instead)."""
        if self.limits.overflow != "refuse" or not added:
            return
        held = session.state.cached_length if session is not None and session.state is not None else 0
        if held + added > self.max_cached_tokens:
            raise InvalidInput(
                f"adds {added} tokens to a session holding {held}; a session holds at most "
                f"{self.max_cached_tokens} (max_cached_tokens): close it to start again",
                field="text",
            )

    def discard(self, session_ids: Sequence[str]) -> int:
        """Drop these sessions (counted as dropped): a batch that failed part-way may have left them
        half-appended, so their next chunk starts afresh (`new_session`). Returns how many were open."""
        with self._lock:
            present = [sid for sid in session_ids if sid in self._sessions]
            for sid in present:
                self._drop(sid)
            return len(present)

    def close(self, session_id: str) -> bool:
        """End a session now; False when it was not open."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
            if session is None:
                return False
            self.stats.closed += 1
            self._account_removed(session)
            return True

    def expire(self) -> int:
        """Drop sessions idle longer than the TTL; return how many."""
        with self._lock:
            return self._expire(self._clock())

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def last_item(self, session_id: str) -> ClassifyItem | None:
        """The labels and options the session was last appended with (None when it is not open)."""
        session = self._sessions.get(session_id)
        return session.item if session is not None else None

    def session_bytes(self, session_id: str) -> int:
        """Bytes one session's cache takes (0 when it is not open)."""
        session = self._sessions.get(session_id)
        return session.nbytes if session is not None else 0

    # -- internals (called with the lock held) --------------------------------------------------------
    def _extend(self, work: list[tuple[_Session, list[int]]]) -> None:
        if not work:
            return
        for session, _ in work:
            if session.state is not None and session.on_host:
                session.state, session.on_host = session.state.to(self.model.device), False
        states = extend_many(self.model.network, [s.state for s, _ in work], [ids for _, ids in work])
        for (session, ids), state in zip(work, states):
            self.stats.tokens_computed += len(ids)
            if state.cached_length > self.max_cached_tokens:
                state = state.crop(self.max_cached_tokens)
            session.state = state

    def _score(self, work: list[tuple[_Session, ClassifyItem]]) -> list[Prediction]:
        if not work:
            return []
        states: list[KVState] = []
        for session, _ in work:
            if session.state is None:  # callers score only sessions with text
                raise ValueError("a session without text cannot be scored")
            window = session.strategy.window
            states.append(session.state.crop(window) if window is not None else session.state)
        blocks: dict[tuple[str, ...], tuple[int, ...]] = {}
        for _, item in work:
            if tuple(item.labels) not in blocks:
                blocks[tuple(item.labels)] = tuple(self.model.label_block(item.labels))
        chosen = [blocks[tuple(item.labels)] for _, item in work]
        logits = score_cached_many(self.model.network, states, chosen)
        self.stats.scored += len(work)
        self.stats.tokens_computed += sum(len(block) for block in chosen)
        return [
            predictions.finish(PreparedItem(item, (EncodedPass(block, len(item.labels)),)), [row])
            for (_, item), block, row in zip(work, chosen, logits)
        ]

    def _account(self, session: _Session) -> None:
        nbytes = session.state.nbytes if session.state is not None else 0
        ntokens = session.state.cached_length if session.state is not None else 0
        self.stats.bytes_cached += nbytes - session.nbytes
        self.stats.cached_tokens += ntokens - session.ntokens
        session.nbytes, session.ntokens = nbytes, ntokens
        self.stats.sessions = len(self._sessions)

    def _account_removed(self, session: _Session) -> None:
        self.stats.bytes_cached -= session.nbytes
        self.stats.cached_tokens -= session.ntokens
        self.stats.sessions = len(self._sessions)

    def _device_bytes(self) -> int:
        return sum(s.nbytes for s in self._sessions.values() if not s.on_host)

    def _host_bytes(self) -> int:
        return sum(s.nbytes for s in self._sessions.values() if s.on_host)

    def _enforce_budget(self, keep: set[str]) -> None:
        """Past `max_bytes`, move the least recently used sessions to host memory (GPU) or drop them."""
        device_bytes = self._device_bytes()
        for sid in list(self._sessions):
            if device_bytes <= self.limits.max_bytes:
                break
            session = self._sessions[sid]
            if sid in keep or session.on_host:
                continue
            device_bytes -= session.nbytes
            if self._offload and session.state is not None:
                session.state, session.on_host = session.state.to("cpu"), True
                self.stats.offloaded += 1
            else:
                self._drop(sid)
        if not self._offload:
            return
        host_bytes = self._host_bytes()
        for sid in list(self._sessions):
            if host_bytes <= self.limits.host_bytes:
                break
            session = self._sessions[sid]
            if session.on_host:
                host_bytes -= session.nbytes
                self._drop(sid)

    def _drop(self, session_id: str) -> None:
        session = self._sessions.pop(session_id)
        self.stats.dropped += 1
        self._account_removed(session)

    def _expire(self, now: float) -> int:
        # Least recently used first, so last used in ascending order: the stale ones lead.
        stale = list(itertools.takewhile(
            lambda sid: now - self._sessions[sid].last_used > self.limits.idle_ttl_s, self._sessions
        ))  # fmt: skip
        for sid in stale:
            self._account_removed(self._sessions.pop(sid))
        self.stats.expired += len(stale)
        return len(stale)
