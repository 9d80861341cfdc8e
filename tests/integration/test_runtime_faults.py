"""Runtime faults over the real builtin model: no future waits forever, readiness tells the truth.

The replica computes real forward passes on CPU. A fault *outside* a batch's own guard (in the
queue or bookkeeping code after the forward pass) has no real cause in a correct program, so these
tests raise one through a fault hook on the scheduler's own methods, and say so at each hook.
Items are submitted at bulk priority without a deadline, as the Kafka worker submits them: nothing
but the runtime's own handling can resolve them.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from gliclass_core import Classifier, ClassifyItem
from gliclass_core.config import AppConfig, BatchingConfig, ModelConfig
from gliclass_core.errors import (
    BatchFailed,
    DeadlineExceeded,
    GliclassError,
    InvalidInput,
    NotReady,
    Overloaded,
)
from gliclass_core.runtime import BatchPolicy, Priority, Runtime, Scheduler
from gliclass_core.runtime import dispatch as dispatch_module
from gliclass_core.runtime import replica as replica_module
from gliclass_core.runtime import supervision as supervision_module

LABELS = ("billing", "bug report", "feature request")
TEXTS = [
    "My card was charged twice for the same order",
    "The app crashes every time I open the settings page",
    "Please add a dark mode to the dashboard",
    "I would like a refund for the damaged item I received",
]


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.from_pretrained("builtin:minilm", device="cpu")


@pytest.fixture
def runtime(classifier: Classifier) -> Iterator[Runtime]:
    config = AppConfig(
        model=ModelConfig(device="cpu"),
        batching=BatchingConfig(max_batch_size=32, max_batch_tokens=8192, max_wait_ms=2, max_queue=64),
    )
    rt = Runtime.from_config(
        config, policy=BatchPolicy.from_config(config.batching), loader=lambda device: classifier
    )
    rt.start()
    assert rt.wait_ready(60), rt.error
    yield rt
    rt.stop(grace_s=5)


def bulk(rt: Runtime, texts: list[str]) -> list[concurrent.futures.Future[Any]]:
    return rt.scheduler.submit([ClassifyItem(t, LABELS) for t in texts], priority=Priority.BULK)


def settle(futures: list[concurrent.futures.Future[Any]], timeout: float = 30.0) -> None:
    """Every future resolves in time: none is left waiting."""
    _, pending = concurrent.futures.wait(futures, timeout=timeout)
    assert not pending, f"{len(pending)} of {len(futures)} futures still waiting"


def fail_once(target: Callable[..., Any]) -> Callable[..., Any]:
    """`target`, except that its first call raises (the fault hook)."""
    calls = 0

    def hooked(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected fault")
        return target(*args, **kwargs)

    return hooked


def assert_scores_match_offline(classifier: Classifier, texts: list[str], futures: list[Any]) -> None:
    for text, future in zip(texts, futures):
        want = classifier.classify([text], list(LABELS))[0].scores
        np.testing.assert_allclose(list(future.result().scores.values()), list(want.values()), atol=2e-5)


@pytest.mark.parametrize("where", ["bookkeeping after the forward pass", "delivering the results"])
def test_a_fault_outside_the_batch_guard_fails_that_batch_and_the_replica_serves_on(
    runtime: Runtime, classifier: Classifier, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    scheduler = runtime.scheduler
    if where == "delivering the results":
        # Fault hook: `complete` raises before it has touched anything.
        monkeypatch.setattr(scheduler, "complete", fail_once(scheduler.complete))
    else:
        # Fault hook: the batch statistics raise after `complete` counted the batch as done but
        # before any of its futures were resolved.
        monkeypatch.setattr(scheduler._stats, "batch", fail_once(scheduler._stats.batch))
    first = bulk(runtime, TEXTS)
    settle(first)
    errors = [f.exception() for f in first]
    assert any(e is not None for e in errors)
    for error in errors:
        if error is not None:
            assert isinstance(error, BatchFailed) and "injected fault" in str(error)
    # The replica restarted its loop: later work is computed, scores as offline, nothing leaked.
    again = bulk(runtime, TEXTS)
    settle(again)
    assert_scores_match_offline(classifier, TEXTS, again)
    assert runtime.ready and runtime.error is None
    assert runtime.pool.replicas[0].faults == 1
    stats = runtime.stats()
    assert stats.in_flight_batches == 0 and stats.queue_depth == 0


def test_a_fault_while_forming_a_batch_restarts_the_loop_and_keeps_the_queue(
    runtime: Runtime, classifier: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault hook: batch forming is a pure function with no real way to fail; make it raise once.
    monkeypatch.setattr(dispatch_module, "form_batch", fail_once(dispatch_module.form_batch))
    futures = bulk(runtime, TEXTS)
    settle(futures)
    assert_scores_match_offline(classifier, TEXTS, futures)  # nothing was held: nothing failed
    assert runtime.pool.replicas[0].faults == 1 and runtime.ready


def test_a_replica_that_keeps_faulting_takes_the_pool_out_of_ready(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault hook: every delivery raises, as a persistent bug would.
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected persistent fault")

    monkeypatch.setattr(runtime.scheduler, "complete", broken)
    monkeypatch.setattr(supervision_module, "RESTART_DELAY_S", 0.01)
    futures: list[concurrent.futures.Future[Any]] = []
    deadline = time.monotonic() + 30
    # A steady feed, like a Kafka partition: submit until the runtime refuses.
    while time.monotonic() < deadline:
        try:
            futures += bulk(runtime, TEXTS[:2])
        except Overloaded:
            pass  # the faulting replica is slower than the feed (a loaded machine): keep feeding
        except NotReady:
            break
        time.sleep(0.02)
    else:
        pytest.fail("the runtime kept accepting work while its only replica faulted on every batch")
    settle(futures)
    outcomes = {type(f.exception()) for f in futures}
    assert outcomes <= {BatchFailed, NotReady} and BatchFailed in outcomes
    assert all(isinstance(f.exception(), GliclassError) for f in futures)
    assert not runtime.ready
    assert isinstance(runtime.error, NotReady) and "stopped after 5 faults" in str(runtime.error)
    assert runtime.pool.replicas[0].faults == replica_module.MAX_FAULTS
    assert runtime.pool.join(5), "the replica thread is still running"
    with pytest.raises(NotReady):
        bulk(runtime, TEXTS[:1])


def test_the_other_replicas_stop_too_and_nothing_waits(classifier: Classifier, monkeypatch) -> None:
    config = AppConfig(
        model=ModelConfig(device="cpu", replicas_per_device=2, cpu_threads=2),
        batching=BatchingConfig(max_batch_size=4, max_wait_ms=1, max_queue=200),
    )
    rt = Runtime.from_config(config, loader=lambda device: classifier)
    rt.start()
    assert rt.wait_ready(60), rt.error
    try:
        faulty = rt.pool.replicas[0]
        complete = rt.scheduler.complete

        # Fault hook: deliveries from one replica's thread raise; the other replica is healthy.
        def from_one_replica(*args: Any, **kwargs: Any) -> None:
            if threading.current_thread().name == f"gliclass-{faulty.name}":
                raise RuntimeError("injected fault in one replica")
            complete(*args, **kwargs)

        monkeypatch.setattr(rt.scheduler, "complete", from_one_replica)
        monkeypatch.setattr(supervision_module, "RESTART_DELAY_S", 0.01)
        futures: list[concurrent.futures.Future[Any]] = []
        deadline = time.monotonic() + 60
        while rt.ready and time.monotonic() < deadline:
            try:
                futures += bulk(rt, TEXTS * 2)
            except Overloaded:
                pass  # the healthy replica is behind: keep feeding, as the worker would
            except NotReady:
                break
            time.sleep(0.01)
        assert not rt.ready and faulty.faults == replica_module.MAX_FAULTS
        settle(futures)
        assert all(f.exception() is None or isinstance(f.exception(), GliclassError) for f in futures)
        assert rt.pool.join(5)
    finally:
        rt.stop(grace_s=1)


def test_an_item_needing_more_passes_than_the_queue_holds_is_invalid_input(own_checkpoint) -> None:
    # A uni-encoder scores labels inside the text's pass, so many labels need several passes.
    uni = Classifier.from_pretrained(str(own_checkpoint("faults-uni")), device="cpu")
    labels = tuple(f"topic number {i} of many" for i in range(300))
    passes = len(uni.prepare(ClassifyItem(TEXTS[0], labels)).passes)
    assert passes >= 3  # the premise: several label chunks
    limit = passes - 1
    scheduler = Scheduler(BatchPolicy(max_wait_s=60), max_queue=limit)
    scheduler.open(uni, replicas=0)  # nobody pulls: only admission is under test
    with pytest.raises(InvalidInput) as raised:
        scheduler.submit([ClassifyItem(TEXTS[1], LABELS), ClassifyItem(TEXTS[0], labels)], Priority.BULK)
    assert raised.value.index == 1 and raised.value.field == "labels"
    assert f"need {passes} passes" in str(raised.value) and f"at most {limit}" in str(raised.value)
    # Items that fit one by one but never together: the call is invalid, not overloaded.
    two = next(
        labels[:n]
        for n in range(2, len(labels))
        if len(uni.prepare(ClassifyItem(TEXTS[0], labels[:n])).passes) == 2
    )
    count = limit // 2 + 1  # no more items than the queue holds, but more passes
    with pytest.raises(InvalidInput) as raised:
        scheduler.submit([ClassifyItem(TEXTS[0], two)] * count)
    assert raised.value.index is None and raised.value.field == "items"
    assert f"need {2 * count} passes" in str(raised.value)
    few = labels[:3]
    # What fits when the queue is empty is still only Overloaded while the queue is full.
    scheduler.submit([ClassifyItem(TEXTS[0], few)] * limit)
    with pytest.raises(Overloaded):
        scheduler.submit([ClassifyItem(TEXTS[0], few)])
    stats = scheduler.stats()
    assert stats.queue_depth == limit and stats.rejected_items == 1
    scheduler.close(grace_s=0)


def test_a_fault_after_a_batch_was_taken_but_before_it_was_handed_out_fails_it(
    classifier: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]  # the scheduler's clock, moved by hand: no race with a slow tokenizer
    scheduler = Scheduler(BatchPolicy(max_wait_s=0), max_queue=16, clock=lambda: now[0])
    scheduler.open(classifier, replicas=1)
    late = scheduler.submit([ClassifyItem(TEXTS[0], LABELS)], deadline=now[0] + 1)
    waiting = scheduler.submit([ClassifyItem(TEXTS[1], LABELS)], priority=Priority.BULK)
    now[0] += 2  # the first item's deadline passes while it is queued
    count = scheduler._stats.count

    # Fault hook: counting the expired item raises, after the batch was taken from the queue.
    def faulty_count(name: str, n: int = 1) -> None:
        if name == "expired_items":
            raise RuntimeError("injected fault while counting")
        count(name, n)

    monkeypatch.setattr(scheduler._stats, "count", faulty_count)
    with pytest.raises(RuntimeError, match="injected"):
        scheduler.next_batch()  # as a replica's loop would call it
    settle(late + waiting, timeout=1)
    assert isinstance(late[0].exception(), DeadlineExceeded)
    assert isinstance(waiting[0].exception(), BatchFailed)
    assert scheduler.stats().in_flight_batches == 0
    scheduler.close(grace_s=0)
