"""The scheduler's intake thread: texts are tokenized there, many submissions per call, and items
waiting for it still count against the queue bound, can be cancelled, and fail cleanly at shutdown.

The real builtin model and tokenizer throughout. To hold the intake thread at a known point, the
classifier's `encode` is wrapped to wait on a gate first (a real tokenizer cannot be paused).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from gliclass_core import Classifier, ClassifyItem
from gliclass_core.config import AppConfig, BatchingConfig, ModelConfig
from gliclass_core.errors import NotReady, Overloaded
from gliclass_core.runtime import Priority, Runtime
from gliclass_core.types import ItemPlan, PreparedItem

LABELS = ("billing", "bug report", "feature request")
TEXTS = [f"Ticket {i}: my card was charged twice and the app crashed" for i in range(8)]


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.from_pretrained("builtin:minilm", device="cpu")


class GatedEncode:
    """The real classifier; `encode` records its thread and batch size, then waits for `gate`."""

    def __init__(self, real: Classifier) -> None:
        self._real = real
        self.gate = threading.Event()
        self.calls: list[tuple[str, int]] = []
        self.threads: list[threading.Thread] = []

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def encode(self, plans: Sequence[ItemPlan]) -> list[PreparedItem]:
        self.calls.append((threading.current_thread().name, len(plans)))
        self.threads.append(threading.current_thread())
        assert self.gate.wait(60)
        return self._real.encode(plans)

    def wait_calls(self, n: int) -> None:
        deadline = time.monotonic() + 30
        while len(self.calls) < n:
            assert time.monotonic() < deadline, self.calls
            time.sleep(0.005)


@pytest.fixture
def gated(classifier: Classifier) -> Iterator[tuple[Runtime, GatedEncode]]:
    wrapper = GatedEncode(classifier)
    config = AppConfig(
        model=ModelConfig(device="cpu"),
        batching=BatchingConfig(max_batch_size=32, max_wait_ms=2, max_queue=4, bulk_queue_share=1.0),
    )
    rt = Runtime.from_config(config, loader=lambda device: wrapper)  # type: ignore[arg-type, return-value]
    rt.start()
    assert rt.wait_ready(60), rt.error
    try:
        yield rt, wrapper
    finally:
        wrapper.gate.set()
        rt.stop(grace_s=5)


def _scores(classifier: Classifier, text: str) -> dict[str, float]:
    return classifier.classify([text], list(LABELS))[0].scores


def test_submissions_are_tokenized_together_off_the_callers_thread(
    gated: tuple[Runtime, GatedEncode], classifier: Classifier
) -> None:
    rt, wrapper = gated

    async def callers() -> list:
        first = asyncio.ensure_future(rt.scheduler.classify([ClassifyItem(TEXTS[0], LABELS)]))
        await asyncio.to_thread(wrapper.wait_calls, 1)  # the intake holds the first item
        rest = [asyncio.ensure_future(rt.scheduler.classify([ClassifyItem(t, LABELS)])) for t in TEXTS[1:4]]
        await asyncio.sleep(0.05)
        wrapper.gate.set()
        return [await first, *await asyncio.gather(*rest)]

    results = asyncio.run(callers())
    assert [name for name, _ in wrapper.calls] == ["gliclass-intake"] * len(wrapper.calls)
    assert wrapper.calls[:2] == [("gliclass-intake", 1), ("gliclass-intake", 3)]  # 3 callers, 1 call
    for text, (prediction,) in zip(TEXTS, results):
        want = _scores(classifier, text)
        assert max(abs(prediction.scores[k] - want[k]) for k in LABELS) < 1e-5


def test_items_waiting_for_the_intake_count_against_the_queue(gated: tuple[Runtime, GatedEncode]) -> None:
    rt, wrapper = gated
    held = rt.scheduler.submit([ClassifyItem(TEXTS[0], LABELS)], priority=Priority.BULK)
    wrapper.wait_calls(1)
    more = rt.scheduler.submit([ClassifyItem(t, LABELS) for t in TEXTS[1:4]], priority=Priority.BULK)
    assert rt.stats().queue_depth == 4
    with pytest.raises(Overloaded):
        rt.scheduler.submit([ClassifyItem(TEXTS[4], LABELS)])
    wrapper.gate.set()
    assert all(f.result(timeout=60).scores for f in held + more)
    assert rt.stats().queue_depth == 0


def test_cancelling_an_item_before_it_is_tokenized(gated: tuple[Runtime, GatedEncode]) -> None:
    rt, wrapper = gated
    (held,) = rt.scheduler.submit([ClassifyItem(TEXTS[0], LABELS)])
    wrapper.wait_calls(1)
    waiting, kept = rt.scheduler.submit([ClassifyItem(t, LABELS) for t in TEXTS[1:3]])
    assert waiting.cancel()
    assert rt.stats().queue_depth == 2
    wrapper.gate.set()
    assert held.result(timeout=60).scores and kept.result(timeout=60).scores
    stats = rt.stats()
    assert waiting.cancelled() and stats.cancelled_items == 1 and stats.queue_depth == 0
    assert wrapper.calls[1] == ("gliclass-intake", 1)  # the cancelled item was never tokenized


def test_shutdown_fails_items_still_waiting_for_the_intake(gated: tuple[Runtime, GatedEncode]) -> None:
    rt, wrapper = gated
    (held,) = rt.scheduler.submit([ClassifyItem(TEXTS[0], LABELS)])
    wrapper.wait_calls(1)
    (waiting,) = rt.scheduler.submit([ClassifyItem(TEXTS[1], LABELS)])
    failed = rt.scheduler.close(grace_s=0.2)
    wrapper.gate.set()
    assert failed == 2
    for future in (held, waiting):
        with pytest.raises(NotReady):
            future.result(timeout=30)


def test_shutdown_while_a_round_is_tokenized_lets_the_intake_thread_return_cleanly(
    gated: tuple[Runtime, GatedEncode], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The round being tokenized is failed by `close`; when its encode returns, the intake thread
    # must drop it and return, not die on it (an exception there is lost to a thread hook).
    rt, wrapper = gated
    errors: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    (held,) = rt.scheduler.submit([ClassifyItem(TEXTS[0], LABELS)])
    wrapper.wait_calls(1)
    (intake,) = wrapper.threads
    assert rt.scheduler.close(grace_s=0.2) == 1
    wrapper.gate.set()
    intake.join(30)
    assert not intake.is_alive()
    assert [f"{e.exc_type.__name__}: {e.exc_value}" for e in errors] == []
    with pytest.raises(NotReady):
        held.result(timeout=30)
