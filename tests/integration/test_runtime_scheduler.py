"""The scheduler and pool over the real builtin model (CPU forward passes, real threads).

One model load per module; each test builds its own Runtime around it (replicas are copies).
Fakes appear only where a failure cannot be caused for real on a CPU machine (CUDA OOM, an
exception inside a forward pass) and say so.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from gliclass_core import Classifier, ClassifyItem, EncodedPass
from gliclass_core.config import AppConfig, BatchingConfig, ModelConfig
from gliclass_core.errors import BatchFailed, DeadlineExceeded, InvalidInput, NotReady, Overloaded
from gliclass_core.runtime import BatchPolicy, Priority, Runtime, Scheduler

LABELS = ("billing", "bug report", "feature request")
OTHER_LABELS = ("sports", "politics", "technology", "travel")
TEXTS = [
    "My card was charged twice for the same order",
    "The app crashes every time I open the settings page",
    "Please add a dark mode to the dashboard",
    "Our team won the championship in overtime last night",
    "The new phone has a great camera but the battery dies fast",
    "I would like a refund for the damaged item I received last week from your store",
]


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.from_pretrained("builtin:minilm", device="cpu")


def make_runtime(
    classifier: Classifier,
    *,
    replicas: int = 1,
    max_queue: int = 1000,
    loader=None,
    **policy: float,
) -> Runtime:
    config = AppConfig(
        model=ModelConfig(device="cpu", replicas_per_device=replicas),
        batching=BatchingConfig(max_batch_size=32, max_batch_tokens=8192, max_wait_ms=2, max_queue=max_queue),
    )
    return Runtime.from_config(
        config,
        policy=BatchPolicy.from_config(config.batching, **policy),
        loader=loader or (lambda device: classifier),
    )


@pytest.fixture
def runtime(classifier: Classifier) -> Iterator[Runtime]:
    rt = make_runtime(classifier)
    rt.start()
    assert rt.wait_ready(60), rt.error
    yield rt
    rt.stop(grace_s=5)


def offline(classifier: Classifier, item: ClassifyItem) -> dict[str, float]:
    return classifier.classify([item.text], list(item.labels))[0].scores


def assert_scores_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert list(got) == list(want)
    np.testing.assert_allclose(list(got.values()), list(want.values()), atol=2e-5)


def test_not_ready_until_every_replica_warmed_up(classifier: Classifier) -> None:
    rt = make_runtime(classifier, replicas=2)
    assert not rt.ready
    with pytest.raises(NotReady):
        rt.scheduler.submit([ClassifyItem(TEXTS[0], LABELS)])
    rt.start()
    try:
        assert rt.wait_ready(60)
        assert rt.ready and all(r.classifier is not None for r in rt.pool.replicas)
        assert len(rt.pool.replicas) == 2 and rt.pool.replicas[1].classifier is not classifier  # own copy
        assert rt.info.device == "cpu,cpu" and rt.info.model_id == "builtin:minilm"
        assert rt.stats().batches == 0  # warm-up passes are not traffic
    finally:
        rt.stop(grace_s=5)
    assert not rt.ready
    with pytest.raises(NotReady):
        rt.scheduler.submit([ClassifyItem(TEXTS[0], LABELS)])


def test_results_match_offline_classify_in_submit_order(runtime: Runtime, classifier: Classifier) -> None:
    items = [ClassifyItem(t, LABELS if i % 2 else OTHER_LABELS) for i, t in enumerate(TEXTS * 3)]
    futures = runtime.scheduler.submit(items)
    assert len(futures) == len(items)
    for item, future in zip(items, futures):
        assert_scores_close(future.result(timeout=30).scores, offline(classifier, item))
    stats = runtime.stats()
    assert stats.completed_items == len(items) and stats.queue_depth == 0
    assert 0 < stats.real_tokens <= stats.padded_tokens
    assert stats.compute_time_s.count == stats.batches


def test_different_label_sets_share_one_batch(runtime: Runtime, classifier: Classifier) -> None:
    text = "The stock market fell sharply today"
    items = [ClassifyItem(text, LABELS), ClassifyItem(text, OTHER_LABELS), ClassifyItem(text, ("a", "b"))]
    futures = runtime.scheduler.submit(items)  # one call: all queued before the replica looks
    for item, future in zip(items, futures):
        assert_scores_close(future.result(timeout=30).scores, offline(classifier, item))
    stats = runtime.stats()
    assert stats.batches == 1 and stats.max_batch_size_seen == 3


def test_submit_from_many_threads_each_gets_its_own_results_in_order(
    runtime: Runtime, classifier: Classifier
) -> None:
    want = {t: offline(classifier, ClassifyItem(t, LABELS)) for t in TEXTS}
    errors: list[BaseException] = []

    def caller(shift: int) -> None:
        try:
            mine = [ClassifyItem(TEXTS[(shift + k) % len(TEXTS)], LABELS) for k in range(5)]
            for item, future in zip(mine, runtime.scheduler.submit(mine, priority=Priority.BULK)):
                assert_scores_close(future.result(timeout=60).scores, want[item.text])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert runtime.stats().completed_items == 40


def test_invalid_input_names_the_item_and_enqueues_nothing(runtime: Runtime) -> None:
    with pytest.raises(InvalidInput) as info:
        runtime.scheduler.submit([ClassifyItem(TEXTS[0], LABELS), ClassifyItem(TEXTS[1], ())])
    assert info.value.index == 1
    stats = runtime.stats()
    assert stats.submitted_items == 0 and stats.queue_depth == 0


def _idle_scheduler(classifier: Classifier, max_queue: int) -> Scheduler:
    """A scheduler no replica pulls from: what is queued stays queued."""
    scheduler = Scheduler(BatchPolicy(max_wait_s=60), max_queue=max_queue)
    scheduler.open(classifier, replicas=0)
    return scheduler


def test_full_queue_rejects_at_once_with_overloaded(classifier: Classifier) -> None:
    scheduler = _idle_scheduler(classifier, max_queue=4)
    scheduler.submit([ClassifyItem(t, LABELS) for t in TEXTS[:3]])
    with pytest.raises(Overloaded):
        scheduler.submit([ClassifyItem(t, LABELS) for t in TEXTS[:2]])
    stats = scheduler.stats()
    assert stats.queue_depth == 3 and stats.rejected_items == 2  # nothing of the rejected call queued
    with pytest.raises(InvalidInput, match="at most 4"):
        scheduler.submit([ClassifyItem(TEXTS[0], LABELS)] * 5)
    assert scheduler.close(grace_s=0) == 3


def test_a_full_queue_refuses_before_planning(
    classifier: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = _idle_scheduler(classifier, max_queue=4)
    scheduler.submit([ClassifyItem(t, LABELS) for t in TEXTS[:3]])
    plan, calls = classifier.plan, []

    def counted(*args, **kwargs):  # the real plan (validation, label chunks), counted
        calls.append(args)
        return plan(*args, **kwargs)

    monkeypatch.setattr(classifier, "plan", counted)
    for _ in range(3):  # a caller retrying against the full queue
        with pytest.raises(Overloaded):
            scheduler.submit([ClassifyItem(t, LABELS) for t in TEXTS[:2]])
    assert calls == [] and scheduler.stats().rejected_items == 6
    scheduler.submit([ClassifyItem(TEXTS[0], LABELS)])  # one pass of room: planned and queued
    assert len(calls) == 1 and scheduler.stats().queue_depth == 4
    assert scheduler.close(grace_s=0) == 4


def test_shutdown_fails_queued_items_explicitly(classifier: Classifier) -> None:
    scheduler = _idle_scheduler(classifier, max_queue=10)
    futures = scheduler.submit([ClassifyItem(t, LABELS) for t in TEXTS[:3]])
    assert scheduler.close(grace_s=0.05) == 3
    for future in futures:
        with pytest.raises(NotReady):
            future.result(timeout=1)
    with pytest.raises(NotReady):
        scheduler.submit([ClassifyItem(TEXTS[0], LABELS)])


def test_stop_drains_queued_work_within_grace(classifier: Classifier) -> None:
    rt = make_runtime(classifier, max_wait_s=30)  # nothing would be dispatched before 30 s
    rt.start()
    assert rt.wait_ready(60)
    futures = rt.scheduler.submit([ClassifyItem(t, LABELS) for t in TEXTS])
    assert rt.stop(grace_s=30) == 0  # draining dispatches at once instead of waiting
    assert all(f.result(timeout=1).labels is not None for f in futures)


def test_expired_items_fail_before_compute(classifier: Classifier) -> None:
    rt = make_runtime(classifier, max_wait_s=0.3)
    rt.start()
    assert rt.wait_ready(60)
    try:
        late = rt.scheduler.submit([ClassifyItem(TEXTS[0], LABELS)], deadline=time.monotonic() + 0.02)[0]
        kept = rt.scheduler.submit([ClassifyItem(TEXTS[1], LABELS)])[0]
        with pytest.raises(DeadlineExceeded):
            late.result(timeout=30)
        assert kept.result(timeout=30).scores
        past = rt.scheduler.submit([ClassifyItem(TEXTS[2], LABELS)], deadline=time.monotonic() - 1)[0]
        with pytest.raises(DeadlineExceeded):
            past.result(timeout=1)
        stats = rt.stats()
        assert stats.expired_items == 2 and stats.batch_size.total == 1  # only `kept` was computed
    finally:
        rt.stop(grace_s=5)


def test_cancelled_future_is_removed_from_the_queue(classifier: Classifier) -> None:
    rt = make_runtime(classifier, max_wait_s=0.3)
    rt.start()
    assert rt.wait_ready(60)
    try:
        futures = rt.scheduler.submit([ClassifyItem(t, LABELS) for t in TEXTS[:3]])
        assert futures[1].cancel()
        assert futures[0].result(timeout=30).scores and futures[2].result(timeout=30).scores
        assert futures[1].cancelled()
        stats = rt.stats()
        assert stats.cancelled_items == 1 and stats.batch_size.total == 2 and stats.queue_depth == 0
    finally:
        rt.stop(grace_s=5)


async def test_classify_is_awaitable_and_task_cancellation_unqueues(classifier: Classifier) -> None:
    rt = make_runtime(classifier, max_wait_s=0.5)
    rt.start()
    assert await asyncio.to_thread(rt.wait_ready, 60)
    try:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())
        preds = await rt.scheduler.classify([ClassifyItem(t, LABELS) for t in TEXTS])
        assert len(preds) == len(TEXTS) and all(p.scores for p in preds)
        assert ticks > 10  # the loop kept running while the replica thread computed
        tick_task.cancel()

        task = asyncio.create_task(rt.scheduler.classify([ClassifyItem(t, LABELS) for t in TEXTS[:4]]))
        await asyncio.sleep(0.05)  # queued, waiting for max_wait
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = rt.stats()
        assert stats.cancelled_items == 4 and stats.queue_depth == 0
        assert stats.batch_size.total == len(TEXTS)  # the cancelled four were never computed
    finally:
        rt.stop(grace_s=5)


class FaultyForward:
    """FAKE FAULT: wraps the real classifier and raises inside `forward` on demand.

    Needed because neither an exception inside a batch nor CUDA out-of-memory can be caused for
    real on a CPU machine; everything else (prepare, finish, the forward itself) is real.
    """

    def __init__(self, real: Classifier, fail_when) -> None:
        self._real = real
        self._fail_when = fail_when
        self.calls: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def forward(self, passes: Sequence[EncodedPass]) -> list[np.ndarray]:
        self.calls.append(len(passes))
        exc = self._fail_when(passes)
        if exc is not None:
            raise exc
        return self._real.forward(passes)


def _runtime_with(classifier: Classifier, faulty: FaultyForward, **policy: float) -> Runtime:
    rt = make_runtime(classifier, loader=lambda device: faulty, **policy)
    rt.start()
    assert rt.wait_ready(60), rt.error
    return rt


def test_exception_in_a_batch_fails_only_that_batch(classifier: Classifier) -> None:
    poison = classifier.prepare(ClassifyItem("poison pill", LABELS)).passes[0].input_ids
    faulty = FaultyForward(
        classifier,
        lambda passes: (
            ValueError("bad row") if any(np.array_equal(p.input_ids, poison) for p in passes) else None
        ),
    )
    rt = _runtime_with(classifier, faulty)
    try:
        bad = rt.scheduler.submit([ClassifyItem("poison pill", LABELS)])[0]
        with pytest.raises(BatchFailed, match="ValueError: bad row") as info:
            bad.result(timeout=30)
        assert isinstance(info.value.__cause__, ValueError)
        good = rt.scheduler.submit([ClassifyItem(TEXTS[0], LABELS)])[0]
        assert_scores_close(
            good.result(timeout=30).scores, offline(classifier, ClassifyItem(TEXTS[0], LABELS))
        )
        assert rt.ready and rt.stats().failed_items == 1
    finally:
        rt.stop(grace_s=5)


def _oom() -> BaseException:
    import torch

    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_splits_the_batch_and_retries_smaller(classifier: Classifier) -> None:
    text = "The stock market fell sharply today"
    faulty = FaultyForward(classifier, lambda passes: _oom() if len(passes) > 2 else None)
    rt = _runtime_with(classifier, faulty)
    try:
        items = [ClassifyItem(text, labels) for labels in (LABELS, OTHER_LABELS, ("a", "b"), ("x", "y", "z"))]
        futures = rt.scheduler.submit(items)
        for item, future in zip(items, futures):
            assert_scores_close(future.result(timeout=30).scores, offline(classifier, item))
        assert faulty.calls[-3:] == [4, 2, 2]
        assert rt.stats().oom_splits == 1
    finally:
        rt.stop(grace_s=5)


def test_out_of_memory_again_after_the_split_fails_those_items(classifier: Classifier) -> None:
    text = "The stock market fell sharply today"
    faulty = FaultyForward(classifier, lambda passes: _oom() if len(passes) > 1 else None)
    rt = _runtime_with(classifier, faulty)
    try:
        futures = rt.scheduler.submit([ClassifyItem(text, LABELS)] * 4)
        for future in futures:
            with pytest.raises(BatchFailed, match="out of memory"):
                future.result(timeout=30)
        assert faulty.calls[-3:] == [4, 2, 2]  # retried once per half, not recursively
        assert rt.scheduler.submit([ClassifyItem(text, LABELS)])[0].result(timeout=30).scores
    finally:
        rt.stop(grace_s=5)


def test_failed_load_is_reported_and_never_ready(classifier: Classifier) -> None:
    def broken(device: str) -> Classifier:
        raise FileNotFoundError("no checkpoint at /nowhere")

    rt = make_runtime(classifier, loader=broken)
    rt.start()
    assert not rt.wait_ready(30)
    assert isinstance(rt.error, FileNotFoundError) and not rt.ready
    rt.stop(grace_s=0)


async def test_classify_raises_the_first_failure_or_returns_it(classifier: Classifier) -> None:
    scheduler = _idle_scheduler(classifier, max_queue=10)
    items = [ClassifyItem(t, LABELS) for t in TEXTS[:2]]
    with pytest.raises(DeadlineExceeded):
        await scheduler.classify(items, deadline=time.monotonic() - 1)
    outcomes = await scheduler.classify(items, deadline=time.monotonic() - 1, return_exceptions=True)
    assert [type(o) for o in outcomes] == [DeadlineExceeded, DeadlineExceeded]
    assert await scheduler.classify([]) == []
    assert scheduler.stats().queue_depth == 0
    scheduler.close(grace_s=0)
