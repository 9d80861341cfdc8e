"""Every runtime thread is supervised the same way: intake, replica, and the completion it runs.

Over the real builtin model (real tokenizer, real forward passes, real threads). A thread dies for
real from a native panic (the Rust tokenizer's `PanicException` derives from BaseException), which
a correct input cannot trigger on demand; so these tests raise a BaseException subclass, `Panic`,
from a patched `encode`, `forward` or `finish_many` (for one poisoned text only), or from the
scheduler's own bookkeeping (a fault hook), and say so at each hook. Items are submitted at bulk
priority without a deadline, as the Kafka worker submits them: only the runtime can resolve them.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from gliclass_core import Classifier, ClassifyItem
from gliclass_core.config import AppConfig, BatchingConfig, ModelConfig
from gliclass_core.errors import BatchFailed, GliclassError, NotReady
from gliclass_core.runtime import BatchPolicy, Priority, Runtime
from gliclass_core.runtime import supervision as supervision_module
from gliclass_core.types import EncodedPass, ItemPlan, Prediction, PreparedItem

LABELS = ("billing", "bug report", "feature request")
POISON = "poisoned text that panics the native code"
TEXTS = [
    "My card was charged twice for the same order",
    POISON,
    "The app crashes every time I open the settings page",
    "Please add a dark mode to the dashboard",
]


class Panic(BaseException):
    """Stands in for pyo3's PanicException: a BaseException, not an Exception."""


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.from_pretrained("builtin:minilm", device="cpu")


class Panicky:
    """FAKE FAULT: the real classifier, except that one stage panics on the poisoned text."""

    def __init__(self, real: Classifier, stage: str) -> None:
        self._real = real
        self.stage = stage
        self.poison_ids = real.prepare(ClassifyItem(POISON, LABELS)).passes[0].input_ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def encode(self, plans: Sequence[ItemPlan]) -> list[PreparedItem]:
        if self.stage == "encode" and any(plan.item.text == POISON for plan in plans):
            raise Panic("tokenizer panicked")
        return self._real.encode(plans)

    def forward(self, passes: Sequence[EncodedPass]) -> list[np.ndarray]:
        if self.stage == "forward" and any(np.array_equal(p.input_ids, self.poison_ids) for p in passes):
            raise Panic("kernel panicked")
        return self._real.forward(passes)

    def finish_many(self, prepared: Sequence[PreparedItem], logits: Any) -> Sequence[Prediction | Exception]:
        if self.stage == "finish" and any(p.item.text == POISON for p in prepared):
            raise Panic("post-processing panicked")
        return self._real.finish_many(prepared, logits)


def start(model: Any) -> Runtime:
    config = AppConfig(
        model=ModelConfig(device="cpu"),
        batching=BatchingConfig(max_batch_size=32, max_batch_tokens=8192, max_wait_ms=20, max_queue=256),
    )
    rt = Runtime.from_config(config, policy=BatchPolicy.from_config(config.batching), loader=lambda d: model)
    rt.start()
    assert rt.wait_ready(60), rt.error
    return rt


@pytest.fixture
def runtime(classifier: Classifier) -> Iterator[Runtime]:
    rt = start(classifier)
    yield rt
    rt.stop(grace_s=5)


def bulk(rt: Runtime, texts: list[str]) -> list[concurrent.futures.Future[Any]]:
    return rt.scheduler.submit([ClassifyItem(t, LABELS) for t in texts], priority=Priority.BULK)


def settle(futures: list[concurrent.futures.Future[Any]], timeout: float = 30.0) -> None:
    _, pending = concurrent.futures.wait(futures, timeout=timeout)
    assert not pending, f"{len(pending)} of {len(futures)} futures still waiting"


@pytest.mark.parametrize("stage", ["encode", "forward", "finish"])
def test_a_panic_fails_the_item_that_caused_it_alone_and_the_thread_serves_on(
    classifier: Classifier, stage: str
) -> None:
    model = Panicky(classifier, stage)
    rt = start(model)
    try:
        # One submission per text inside one round / batch: the panic must be split down to POISON.
        futures = [f for text in TEXTS for f in bulk(rt, [text])]
        settle(futures)
        for text, future in zip(TEXTS, futures):
            if text == POISON:
                with pytest.raises(BatchFailed, match="Panic") as failed:
                    future.result()
                assert isinstance(failed.value.__cause__, Panic)
            else:
                want = classifier.classify([text], list(LABELS))[0].scores
                got = future.result().scores
                np.testing.assert_allclose(list(got.values()), list(want.values()), atol=2e-5)
        again = bulk(rt, TEXTS[:1] + TEXTS[2:])  # the thread lives on: later work is computed
        settle(again)
        assert all(f.exception() is None for f in again)
        assert rt.ready and rt.error is None
        assert rt.scheduler._intake.alive and all(r.alive for r in rt.pool.replicas)
        stats = rt.stats()
        assert stats.failed_items == 1 and stats.queue_depth == 0 and stats.in_flight_batches == 0
    finally:
        rt.stop(grace_s=5)


def panic_on(target: Callable[..., Any], calls: list[int], times: int | None) -> Callable[..., Any]:
    """Fault hook: `target`, except that its first `times` calls (all when None) panic."""

    def hooked(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if times is None or len(calls) <= times:
            raise Panic("injected panic in the thread's own bookkeeping")
        return target(*args, **kwargs)

    return hooked


@pytest.mark.parametrize("thread", ["intake", "replica"])
def test_a_thread_killed_once_fails_what_it_held_and_restarts(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, thread: str
) -> None:
    calls: list[int] = []
    if thread == "intake":
        # Fault hook: queueing a tokenized round raises outside `encode`'s own guard.
        passes = runtime.scheduler._passes
        monkeypatch.setattr(passes, "enqueue_tokenized", panic_on(passes.enqueue_tokenized, calls, 1))
    else:
        # Fault hook: delivering a computed batch raises outside the batch's guard.
        sched = runtime.scheduler
        monkeypatch.setattr(sched, "complete", panic_on(sched.complete, calls, 1))
    first = bulk(runtime, TEXTS[:1])
    settle(first)
    with pytest.raises(BatchFailed, match="Panic"):
        first[0].result()
    again = bulk(runtime, TEXTS)
    settle(again)
    assert all(f.exception() is None for f in again)
    faults = runtime.scheduler.intake_faults if thread == "intake" else runtime.pool.replicas[0].faults
    assert faults == 1 and runtime.ready


@pytest.mark.parametrize("thread", ["intake", "replica"])
def test_a_thread_that_keeps_dying_takes_the_pool_out_of_ready_and_nothing_waits(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, thread: str
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(supervision_module, "RESTART_DELAY_S", 0.01)
    if thread == "intake":  # fault hook, as above, on every call
        passes = runtime.scheduler._passes
        monkeypatch.setattr(passes, "enqueue_tokenized", panic_on(passes.enqueue_tokenized, calls, None))
    else:
        sched = runtime.scheduler
        monkeypatch.setattr(sched, "complete", panic_on(sched.complete, calls, None))
    futures: list[concurrent.futures.Future[Any]] = []
    for _ in range(200):  # a steady feed, like a Kafka partition, until the runtime refuses
        try:
            futures += bulk(runtime, TEXTS[:1])
        except NotReady:
            break
        concurrent.futures.wait(futures[-1:], timeout=5)
    else:
        pytest.fail(f"the runtime kept accepting work while its {thread} thread died on every round")
    settle(futures)
    assert all(isinstance(f.exception(), GliclassError) for f in futures)
    assert not runtime.ready
    assert isinstance(runtime.error, NotReady)
    assert "stopped after 5 faults" in str(runtime.error) and "Panic" in str(runtime.error)
    if thread == "intake":
        # The thread reports its stop just before it returns: give it that moment.
        runtime.scheduler._intake.join(timeout=5.0)
        assert "intake" in str(runtime.error) and not runtime.scheduler._intake.alive
    assert runtime.pool.join(5)
    with pytest.raises(NotReady):
        bulk(runtime, TEXTS[:1])
