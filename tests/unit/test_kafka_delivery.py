"""Offset tracking and output ordering, without a broker."""

from __future__ import annotations

import pytest

from worker.delivery import OffsetTracker, OrderedLane

A, B = ("in", 0), ("in", 1)


def test_commit_position_is_one_past_the_acked_prefix():
    t = OffsetTracker()
    for off in (10, 11, 13, 14):  # 12 is a gap (e.g. a transaction marker): never consumed
        t.track(A, off)
    t.ack(A, 11)
    t.ack(A, 13)
    assert t.committable() == {}  # 10 not acked: nothing is safe yet
    t.ack(A, 10)
    assert t.committable() == {A: 14}
    t.mark_committed({A: 14})
    assert t.committable() == {}
    assert t.unacked(A) == 1
    t.ack(A, 14)
    assert t.committable() == {A: 15} and t.unacked() == 0


def test_partitions_are_independent_and_drop_forgets():
    t = OffsetTracker()
    t.track(A, 0)
    t.track(B, 0)
    t.ack(B, 0)
    assert t.committable() == {B: 1}
    t.drop(B)
    t.ack(B, 0)  # a late acknowledgement of a revoked partition is ignored
    assert t.committable() == {} and t.partitions() == [A]


def test_offsets_must_increase():
    t = OffsetTracker()
    t.track(A, 5)
    with pytest.raises(ValueError):
        t.track(A, 5)


def test_lane_releases_only_the_ready_prefix_in_order():
    lane: OrderedLane[int] = OrderedLane()
    for off in range(5):
        lane.push(off)
    ready = {1, 2, 4}
    assert list(lane.pop_ready(ready.__contains__)) == []  # 0 not ready blocks everything
    ready.add(0)
    assert list(lane.pop_ready(ready.__contains__)) == [0, 1, 2]
    assert lane.peek() == 3 and len(lane) == 2
    assert lane.drain() == [3, 4] and len(lane) == 0


def test_requeued_slots_go_back_to_the_front_in_order():
    lane: OrderedLane[int] = OrderedLane()
    for off in (7, 8):
        lane.push(off)
    lane.requeue([4, 5, 6])  # released earlier; their delivery failed
    assert lane.drain() == [4, 5, 6, 7, 8]


def test_acknowledging_a_re_sent_record_again_changes_nothing():
    t = OffsetTracker()
    for off in range(3):
        t.track(A, off)
    t.ack(A, 1)  # delivered after 0 failed
    t.ack(A, 0)  # 0 re-sent and delivered
    t.ack(A, 1)  # the re-sent copy of 1 delivered too
    assert t.positions() == {A: 2} and t.unacked(A) == 1
    t.ack(A, 2)
    t.ack(A, 0)  # behind the position: ignored
    assert t.positions() == {A: 3} and t.unacked(A) == 0
