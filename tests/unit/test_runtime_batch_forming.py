"""Batch forming as a pure function: no threads, no model, just queues of frozen dataclasses."""

from __future__ import annotations

import itertools
import random

import pytest

from gliclass_core.config import BatchingConfig
from gliclass_core.runtime.batch_forming import (
    BatchPolicy,
    PendingPass,
    Priority,
    QueueState,
    form_batch,
    group_by_length,
)

INTER, BULK = Priority.INTERACTIVE, Priority.BULK


def queue(
    lengths: list[int], priority: Priority = INTER, start_key: int = 0, at: float = 0.0, **kw
) -> list[PendingPass]:
    return [PendingPass(start_key + i, n, priority, at + i * 1e-6, **kw) for i, n in enumerate(lengths)]


def keys(batch) -> list[int]:
    return [p.key for p in batch]


POLICY = BatchPolicy(max_batch_size=8, max_batch_tokens=1000, max_wait_s=0.01, min_padding_efficiency=0.0)


def test_waits_for_more_work_until_max_wait_then_dispatches():
    q = queue([10, 10])
    early = form_batch(q, [], POLICY, QueueState(now=0.001))
    assert early.batch == () and early.wake_at == pytest.approx(0.01)
    late = form_batch(q, [], POLICY, QueueState(now=0.02))
    assert keys(late.batch) == [0, 1]


def test_dispatches_at_once_when_a_full_batch_is_queued():
    decision = form_batch(queue([10] * 8), [], POLICY, QueueState(now=0.0))
    assert len(decision.batch) == 8


def test_empty_queues_wait_for_arrivals():
    decision = form_batch([], [], POLICY, QueueState(now=5.0))
    assert decision.batch == () and decision.wake_at is None


def test_max_batch_size_caps_the_batch():
    decision = form_batch(queue([10] * 20), [], POLICY, QueueState(now=1.0))
    assert len(decision.batch) == 8
    assert keys(decision.batch) == list(range(8))  # equal lengths: oldest first


def test_token_budget_counts_padded_tokens():
    # One 400-token row pads every other row to 400: only 2 rows fit 1000 padded tokens,
    # although their real tokens (400 + 7 * 10) would fit.
    q = queue([400, 10, 10, 10, 10, 10, 10, 10])
    decision = form_batch(q, [], POLICY, QueueState(now=1.0))
    assert decision.batch[0].key == 0
    assert decision.padded_tokens == 400 * len(decision.batch) <= 1000
    assert len(decision.batch) == 2
    assert decision.real_tokens == 410


def test_a_row_longer_than_the_budget_still_runs_alone():
    decision = form_batch(queue([5000, 10]), [], POLICY, QueueState(now=1.0))
    assert keys(decision.batch) == [0]


def test_interactive_beats_bulk():
    bulk = queue([10] * 5, BULK, start_key=0, at=0.0)
    inter = queue([10] * 2, INTER, start_key=100, at=0.5)
    decision = form_batch(inter, bulk, POLICY, QueueState(now=0.6, last_bulk_dispatch_at=0.59))
    assert decision.priority is INTER
    assert keys(decision.batch) == [100, 101]


def test_bulk_runs_when_no_interactive_work_is_queued():
    decision = form_batch([], queue([10] * 3, BULK), POLICY, QueueState(now=1.0))
    assert decision.priority is BULK and len(decision.batch) == 3


def test_bulk_is_never_starved_by_a_steady_interactive_stream():
    """Simulate: interactive work always queued; bulk must still get batches regularly."""
    policy = BatchPolicy(max_batch_size=4, max_batch_tokens=1000, max_wait_s=0.0, bulk_starvation_s=0.05)
    bulk = queue([10] * 40, BULK, start_key=10_000)
    now, last_bulk, next_key = 0.0, float("-inf"), 0
    bulk_batches_at = []
    for _ in range(200):
        inter = queue([10] * 4, INTER, start_key=next_key, at=now)  # a fresh interactive backlog each step
        next_key += 4
        decision = form_batch(inter, bulk, policy, QueueState(now=now, last_bulk_dispatch_at=last_bulk))
        if decision.priority is BULK:
            taken = set(keys(decision.batch))
            bulk = [p for p in bulk if p.key not in taken]
            last_bulk = now
            bulk_batches_at.append(now)
        now += 0.01  # each batch takes 10 ms
    assert not bulk  # all 40 bulk rows were served despite the interactive stream
    gaps = [b - a for a, b in itertools.pairwise(bulk_batches_at)]
    assert max(gaps) <= 0.05 + 0.01 + 1e-9  # never longer than the starvation bound plus one batch


def test_bulk_batches_are_capped_while_interactive_traffic_flows():
    policy = BatchPolicy(
        max_batch_size=64, max_batch_tokens=10_000, max_wait_s=0.0, bulk_tokens_while_interactive=100
    )
    bulk = queue([20] * 50, BULK)
    quiet = form_batch([], bulk, policy, QueueState(now=10.0, last_interactive_at=0.0))
    busy = form_batch(
        [], bulk, policy, QueueState(now=10.0, last_interactive_at=9.9, last_bulk_dispatch_at=9.99)
    )
    assert len(quiet.batch) == 50
    assert len(busy.batch) == 5 and busy.padded_tokens <= 100


def test_reserved_replica_leaves_bulk_alone_while_interactive_flows():
    bulk = queue([10] * 3, BULK, at=1.0)
    state = QueueState(
        now=1.001, last_interactive_at=1.0, last_bulk_dispatch_at=1.0, reserve_for_interactive=True
    )
    held = form_batch([], bulk, POLICY, state)
    assert held.batch == () and held.wake_at is not None and held.wake_at > state.now
    # Once interactive traffic stops, the reserved replica helps with bulk again.
    free = form_batch(
        [], bulk, POLICY, QueueState(now=5.0, last_interactive_at=1.0, reserve_for_interactive=True)
    )
    assert len(free.batch) == 3


def test_expired_rows_are_dropped_before_compute():
    q = [
        PendingPass(0, 10, INTER, 0.0, deadline=0.5),
        PendingPass(1, 10, INTER, 0.0, deadline=2.0),
        PendingPass(2, 10, INTER, 0.0),
    ]
    bulk = [PendingPass(3, 10, BULK, 0.0, deadline=0.9)]
    decision = form_batch(q, bulk, POLICY, QueueState(now=1.0))
    assert keys(decision.expired) == [0, 3]
    assert keys(decision.batch) == [1, 2]


def test_expired_rows_are_reported_even_when_nothing_else_is_due():
    q = [PendingPass(0, 10, INTER, 0.0, deadline=0.5), PendingPass(1, 10, INTER, 0.999)]
    decision = form_batch(q, [], POLICY, QueueState(now=1.0))
    assert keys(decision.expired) == [0] and decision.batch == ()
    assert decision.wake_at == pytest.approx(0.999 + 0.01)


def test_draining_dispatches_without_waiting():
    decision = form_batch(queue([10]), [], POLICY, QueueState(now=0.0, draining=True))
    assert keys(decision.batch) == [0]


def test_length_grouping_picks_similar_lengths_around_the_oldest_row():
    policy = BatchPolicy(max_batch_size=3, max_batch_tokens=10_000, max_wait_s=0.0)
    q = queue([100, 12, 300, 98, 11, 102, 299, 10])
    decision = form_batch(q, [], policy, QueueState(now=1.0))
    assert sorted(p.num_tokens for p in decision.batch) == [98, 100, 102]
    assert decision.batch[0].key == 0  # the oldest row always rides along


def test_grouping_respects_the_padding_efficiency_floor():
    policy = BatchPolicy(
        max_batch_size=8, max_batch_tokens=10_000, max_wait_s=0.0, min_padding_efficiency=0.9
    )
    q = queue([100, 10, 10, 10, 400, 400])
    decision = form_batch(q, [], policy, QueueState(now=1.0))
    assert keys(decision.batch) == [0]  # nothing near 100 tokens: it goes alone rather than padded


@pytest.mark.parametrize("seed", range(5))
def test_mixed_stream_padding_efficiency_and_budget(seed: int):
    """A 10–400-token stream drained batch by batch: budgets hold and padding stays low."""
    rng = random.Random(seed)
    policy = BatchPolicy(max_batch_size=32, max_batch_tokens=4096, max_wait_s=0.0)
    pending = queue([rng.randint(10, 400) for _ in range(600)])
    real = padded = 0
    served: set[int] = set()
    now = 1.0
    while pending:
        window = pending[:256]  # the scheduler passes the oldest rows only
        decision = form_batch(window, [], policy, QueueState(now=now))
        assert decision.batch and decision.batch[0].key == pending[0].key
        assert len(decision.batch) <= 32
        assert decision.padded_tokens <= 4096 or len(decision.batch) == 1
        real += decision.real_tokens
        padded += decision.padded_tokens
        taken = set(keys(decision.batch))
        assert not taken & served
        served |= taken
        pending = [p for p in pending if p.key not in taken]
        now += 0.001
    assert len(served) == 600
    assert real / padded >= 0.85


def test_group_by_length_never_exceeds_limits():
    policy = BatchPolicy(max_batch_size=5, max_batch_tokens=250, min_padding_efficiency=0.0)
    q = queue([50] * 10)
    batch = group_by_length(q, q[3], 250, policy)
    assert len(batch) == 5 and q[3] in batch


def test_policy_from_config():
    policy = BatchPolicy.from_config(BatchingConfig(max_batch_size=16, max_batch_tokens=512, max_wait_ms=3))
    assert (policy.max_batch_size, policy.max_batch_tokens, policy.max_wait_s) == (16, 512, 0.003)
    assert policy.bulk_tokens_while_interactive == 512
    assert BatchPolicy.from_config(BatchingConfig(), max_wait_s=0.5).max_wait_s == 0.5


def test_bulk_being_computed_is_not_starving():
    """A long bulk batch in flight must not make the reserved replica take bulk work too."""
    bulk = queue([10] * 3, BULK, at=0.0)
    state = QueueState(
        now=5.0,
        last_interactive_at=4.9,
        last_bulk_dispatch_at=1.0,
        reserve_for_interactive=True,
        bulk_in_flight=1,
    )
    held = form_batch([], bulk, POLICY, state)
    assert held.batch == () and held.wake_at == pytest.approx(4.9 + POLICY.interactive_window_s)
    starving = QueueState(
        now=5.0, last_interactive_at=4.9, last_bulk_dispatch_at=1.0, reserve_for_interactive=True
    )
    assert len(form_batch([], bulk, POLICY, starving).batch) == 3
