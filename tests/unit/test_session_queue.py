"""The scheduler's session queue: batches of distinct sessions, per-session order, priorities, bounds.

Pure queue logic, driven by hypothesis through random interleavings of submissions, batch takes and
completions. The stores are stand-ins (a FAKE: the queue only reads their limits and hands them to
the batch; tests/integration/test_runtime_sessions.py runs the real ones).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gliclass_core.runtime.batch_forming import Priority
from gliclass_core.runtime.calls import CancelSignal
from gliclass_core.runtime.sessions.limits import SessionLimits
from gliclass_core.runtime.sessions.queue import QueuedSessionWork, SessionQueue, replica_of
from gliclass_core.runtime.sessions.strategies import Strategy

SESSIONS = [f"s{i}" for i in range(6)]


def make_queue(replicas: int, max_batch: int, clock: list[float]) -> SessionQueue:
    queue = SessionQueue(threading.Condition(), max_batch, lambda: clock[0])
    stores: Any = [SimpleNamespace(limits=SessionLimits(idle_ttl_s=1000.0)) for _ in range(replicas)]
    queue.attach(stores, Strategy())
    return queue


def work(
    sid: str, priority: Priority, at: float, deadline: float | None = None, **kw: Any
) -> QueuedSessionWork:
    return QueuedSessionWork(sid, None, Future(), priority, at, deadline, **kw)


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("submit"), st.sampled_from(SESSIONS), st.sampled_from(list(Priority)), st.booleans()
        ),
        st.tuples(st.just("take"), st.integers(0, 1)),
        st.tuples(st.just("complete"), st.integers(0, 5)),
        st.tuples(st.just("tick")),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(OPS, st.integers(1, 4))
def test_batches_are_distinct_sessions_in_submission_order(ops: list[Any], max_batch: int) -> None:
    clock = [0.0]
    queue = make_queue(2, max_batch, clock)
    submitted: dict[str, list[QueuedSessionWork]] = {sid: [] for sid in SESSIONS}
    started: dict[str, list[QueuedSessionWork]] = {sid: [] for sid in SESSIONS}
    running: list[Any] = []
    dropped: set[int] = set()
    for op in ops:
        if op[0] == "submit":
            _, sid, priority, expires = op
            entry = work(sid, priority, clock[0], clock[0] + 0.5 if expires else None)
            queue.enqueue([entry])
            submitted[sid].append(entry)
        elif op[0] == "take":
            batch = queue.take(op[1], clock[0], None, None)
            if batch is None:
                continue
            dropped.update(id(e) for e in batch.dropped)
            ids = batch.session_ids
            assert len(ids) == len(set(ids)) <= max_batch
            assert len({e.priority for e in batch.entries}) <= 1
            busy = {sid for b in running for sid in b.session_ids}
            assert not busy & set(ids)  # a session never runs twice at once
            for entry in batch.entries:
                assert replica_of(entry.session_id, 2) == op[1]
                assert not entry.stale(clock[0])
                started[entry.session_id].append(entry)
            running.append(batch)
        elif op[0] == "complete" and running:
            queue.complete(running.pop(op[1] % len(running)))
        else:
            clock[0] += 0.3
        assert queue.depth >= 0
    for sid in SESSIONS:  # every session's entries started in the order they were submitted
        order = [id(e) for e in submitted[sid] if id(e) not in dropped]
        taken = [id(e) for e in started[sid]]
        assert taken == order[: len(taken)]
    left = queue.take_all()
    assert queue.depth == 0
    assert len(left) + len(dropped) + sum(len(v) for v in started.values()) == sum(
        map(len, submitted.values())
    )


def test_interactive_before_bulk_and_passes_by_age() -> None:
    clock = [10.0]
    queue = make_queue(1, 8, clock)
    queue.enqueue([work("a", Priority.BULK, 1.0), work("b", Priority.INTERACTIVE, 2.0)])
    # An interactive pass batch older than the interactive appends goes first.
    assert queue.take(0, clock[0], Priority.INTERACTIVE, 1.5) is None
    batch = queue.take(0, clock[0], Priority.INTERACTIVE, 3.0)
    assert batch is not None and batch.session_ids == ["b"]
    # Bulk appends wait for an interactive pass batch, whatever their age.
    assert queue.take(0, clock[0], Priority.INTERACTIVE, 5.0) is None
    batch = queue.take(0, clock[0], None, None)
    assert batch is not None and batch.session_ids == ["a"]


def test_a_later_append_waits_behind_its_session_of_either_priority() -> None:
    queue = make_queue(1, 8, [0.0])
    queue.enqueue(
        [work("a", Priority.BULK, 0.0), work("a", Priority.INTERACTIVE, 0.1), work("b", Priority.BULK, 0.2)]
    )
    # The interactive append of "a" must not overtake the bulk one queued before it.
    first = queue.take(0, 1.0, None, None)
    assert (
        first is not None and first.session_ids == ["a", "b"] and first.entries[0].priority is Priority.BULK
    )
    assert queue.take(0, 1.0, None, None) is None  # "a" is running
    queue.complete(first)
    second = queue.take(0, 1.0, None, None)
    assert (
        second is not None
        and second.session_ids == ["a"]
        and second.entries[0].priority is Priority.INTERACTIVE
    )


def test_stale_entries_are_dropped_unstarted() -> None:
    queue = make_queue(1, 8, [0.0])
    cancel = CancelSignal()
    entries = [
        work("a", Priority.INTERACTIVE, 0.0, deadline=1.0),
        work("b", Priority.INTERACTIVE, 0.0, cancel=cancel),
    ]
    resolved = work("c", Priority.INTERACTIVE, 0.0)
    resolved.future.cancel()
    queue.enqueue([*entries, resolved])
    cancel.set()
    batch = queue.take(0, 2.0, None, None)
    assert batch is not None and not batch.entries and len(batch.dropped) == 3 and queue.depth == 0


def test_replica_of_is_stable_and_spreads() -> None:
    assert replica_of("conversation-1", 4) == replica_of("conversation-1", 4)
    assert replica_of("conversation-1", 1) == 0
    assert len({replica_of(f"c{i}", 4) for i in range(100)}) == 4
