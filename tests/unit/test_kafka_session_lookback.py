"""Session-route bookkeeping without a broker: the look-back window's bounds and the replay on first sight.

The read-back records come from a list (the real read is exercised with the broker in
tests/integration/test_kafka_sessions.py and tests/e2e/test_worker_sessions_rebalance.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gliclass_core.config import parse_config
from gliclass_core.runtime.sessions.service import SessionSettings
from worker.codec import BadEvent
from worker.config import parse_kafka_config
from worker.loop import BULK_CALL
from worker.sessions import SessionFeed, session_key
from worker.state import Slot

TP = ("chats", 0)


@dataclass
class Record:
    """What the look-back reads: a consumed record's key, value, headers and offset."""

    _key: bytes | None
    _value: bytes | None
    _offset: int

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def offset(self) -> int:
        return self._offset


@dataclass
class ListReader:
    records: list[Record]
    reads: list[tuple[int, int]] = field(default_factory=list)

    def read(self, tp: Any, start: int, end: int, timeout: float) -> Any:
        self.reads.append((start, end))
        return iter([r for r in self.records if start <= r._offset < end])


@dataclass
class Service:
    settings: SessionSettings = field(default_factory=SessionSettings)
    closed: list[str] = field(default_factory=list)

    def submit(self, appends: list[Any], context: Any) -> list[Any]:
        self.closed += [a.session_id for a in appends if a.close and not a.item.text]
        return []


def route(**keys: Any) -> Any:
    table = {"input": "chats", "output": "out", "labels": ["a", "b"], "session": "key", **keys}
    return parse_kafka_config(
        parse_config({"kafka": {"bootstrap_servers": "b:1", "routes": [table]}})
    ).routes[0]


def record(offset: int, key: bytes | None, text: str) -> Record:
    return Record(key, json.dumps({"text": text}).encode(), offset)


def slot(offset: int, key: bytes, the_route: Any) -> Slot:
    return Slot(TP, offset, key, b"{}", [], the_route, 0.0)


def test_window_bounds_skips_dead_letters_and_replays_each_key_once_in_order() -> None:
    records = [
        record(0, b"x", "far back"),  # outside a 4-record window
        record(1, b"x", "one"),
        record(2, None, "no key: dead-lettered when first read, skipped now"),
        record(3, b"y", "hello"),
        record(4, b"x", "two"),
        Record(b"x", b'{"text": "   "}', 5),  # empty text: dead-lettered, skipped
    ]
    reader, service = ListReader(records), Service()
    feed = SessionFeed(service, reader, BULK_CALL, lambda: 1_000_000)  # type: ignore[arg-type]
    r = route(session_lookback=5)
    assert feed.needs_lookback(TP)
    assert feed.load(TP, 6, r, {})
    assert reader.reads == [(1, 6)] and not feed.needs_lookback(TP)

    item = feed.parts[TP].history["y"][0]
    first_x = feed.open(slot(6, b"x", r), item)
    assert [a.item.text for a in first_x.pending] == ["one", "two", "hello"] and first_x.rebuilt
    assert len({a.session_id for a in first_x.pending}) == 1 and first_x.key == "x"
    again = feed.open(slot(7, b"x", r), item)
    assert [a.item.text for a in again.pending] == ["hello"] and not again.rebuilt
    assert (feed.stats.session_lookback_records, feed.stats.session_replayed) == (3, 2)

    feed.drop(TP)  # revoked: its sessions are closed; a new assignment names new sessions
    assert service.closed == [first_x.session_id]
    feed.assign(TP)
    assert feed.load(TP, 6, r, {})
    assert feed.open(slot(6, b"x", r), item).session_id != first_x.session_id


def test_window_keeps_at_most_session_lookback_chars_dropping_the_oldest() -> None:
    records = [record(i, b"k", f"message {i:02d}") for i in range(10)]  # 10 characters each
    feed = SessionFeed(Service(), ListReader(records), BULK_CALL, lambda: 1_000_000)  # type: ignore[arg-type]
    r = route(session_lookback_chars=35)
    assert feed.load(TP, 10, r, {})
    assert [i.text for i in feed.parts[TP].history["k"]] == ["message 07", "message 08", "message 09"]


@settings(max_examples=200, deadline=None)
@given(
    key=st.one_of(
        st.none(),
        st.binary(max_size=64),
        st.text(max_size=32).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )
)
def test_any_record_key_is_a_conversation_name_or_a_named_dead_letter(key: bytes | None) -> None:
    try:
        name = session_key(key)
    except BadEvent as bad:
        assert bad.reason in ("missing_key", "invalid_key") and "key" in bad.message
        return
    assert key and name.encode("utf-8") == key
