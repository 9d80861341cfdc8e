"""Streaming sessions through the runtime: appends of many calls batched on the replica threads.

Over a real Runtime (real threads, real scheduler) and tiny decoder-kv checkpoints built by the
reference package (tests/fixtures/decoder_kv.py), every score computed by real forward passes.
To make batching deterministic, `Gate` holds a replica's first session batch until the test has
queued what it wants batched behind it (a FAKE DELAY: the held batch still runs for real); faults
are raised from a patched decoder call (a FAKE FAULT, `Panic`: a BaseException, as pyo3's panic),
because a correct input cannot make torch fail on demand.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fixtures.decoder_kv import build
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gliclass_core import Classifier, ClassifyItem
from gliclass_core.config import AppConfig, BatchingConfig, ModelConfig
from gliclass_core.errors import BatchFailed, Cancelled, DeadlineExceeded, InvalidInput, Overloaded
from gliclass_core.runtime import BatchPolicy, Priority, Runtime
from gliclass_core.runtime.calls import CallContext
from gliclass_core.runtime.sessions import SessionStore, every_n_tokens
from gliclass_core.runtime.sessions.queue import replica_of
from gliclass_core.runtime.sessions.service import SessionAppend

LABELS = ("billing", "bug report", "feature request")
OTHER_LABELS = ("praise", "complaint")
CHUNKS = ["my card was charged twice", " and the app crashes", " when I open settings", " please help"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    return Classifier.from_pretrained(str(build(tmp_path_factory.mktemp("qwen3"))), device="cpu")


def start(model: Any, *, replicas: int = 1, max_queue: int = 256, bulk_share: float = 1.0,
          **sessions: Any) -> Runtime:  # fmt: skip
    config = AppConfig(
        model=ModelConfig(device="cpu", replicas_per_device=replicas),
        batching=BatchingConfig(
            max_batch_size=8, max_batch_tokens=8192, max_wait_ms=5, max_queue=max_queue,
            bulk_queue_share=bulk_share,
        ),
        raw={"sessions": sessions},
    )  # fmt: skip
    rt = Runtime.from_config(config, policy=BatchPolicy.from_config(config.batching), loader=lambda d: model)
    rt.start()
    assert rt.wait_ready(60), rt.error
    return rt


@pytest.fixture
def runtime(model: Classifier) -> Iterator[Runtime]:
    rt = start(model)
    yield rt
    rt.stop(grace_s=5)


class Gate:
    """FAKE DELAY: the store's first batch waits for `release` (then runs for real); records sizes."""

    def __init__(self, store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self.sizes: list[int] = []
        real = store.append_items

        def held(ids: Any, items: Any, strategies: Any = None) -> Any:
            self.sizes.append(len(ids))
            if not self.entered.is_set():
                self.entered.set()
                assert self.released.wait(30)
            return real(ids, items, strategies)

        monkeypatch.setattr(store, "append_items", held)

    def hold(self, rt: Runtime) -> concurrent.futures.Future[Any]:
        """Queue one append and return once the replica is held inside its batch."""
        [future] = rt.sessions.submit([append("gate", "the gate chunk")], CallContext())
        assert self.entered.wait(30)
        return future


def append(sid: str, text: str, labels: tuple[str, ...] = LABELS, **kwargs: Any) -> SessionAppend:
    return SessionAppend(sid, ClassifyItem(text, labels), **kwargs)


def results(futures: list[concurrent.futures.Future[Any]], timeout: float = 60.0) -> list[Any]:
    return [future.result(timeout) for future in futures]


def lone_scores(model: Classifier, sid: str, chunks: list[str], labels: tuple[str, ...]) -> list[Any]:
    store = SessionStore(model)
    return [store.append(sid, chunk, labels).prediction.scores for chunk in chunks]  # type: ignore[union-attr]


def assert_scores(got: Any, want: Any) -> None:
    assert list(got) == list(want)
    np.testing.assert_allclose(list(got.values()), list(want.values()), atol=1e-5)


def test_appends_of_concurrent_calls_share_batches_with_their_own_labels(
    runtime: Runtime, model: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(runtime.scheduler.sessions.stores[0], monkeypatch)
    held = gate.hold(runtime)
    sessions = [f"conv-{i}" for i in range(8)]
    labels = {sid: (OTHER_LABELS if i % 2 else LABELS) for i, sid in enumerate(sessions)}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # one call per session, from 8 threads
        calls = [
            pool.submit(runtime.sessions.submit, [append(sid, CHUNKS[0], labels[sid])], CallContext())
            for sid in sessions
        ]
        futures = [f for call in calls for f in call.result(30)]
    gate.released.set()
    first = results([held, *futures])
    assert gate.sizes[:2] == [1, 8]  # the 8 calls' appends ran as one batch behind the held one
    rounds = [first[1:]]
    for chunk in CHUNKS[1:]:
        rounds.append(results([f for sid in sessions for f in runtime.sessions.submit(
            [append(sid, chunk, labels[sid])], CallContext())]))  # fmt: skip
    stats = runtime.sessions.stats()
    assert stats.batch_appends > stats.batches and stats.appends == 1 + 8 * len(CHUNKS)
    for index, sid in enumerate(sessions):
        want = lone_scores(model, sid, CHUNKS, labels[sid])
        for step, updates in enumerate(rounds):
            assert updates[index].session_id == sid and updates[index].triggered
            assert_scores(updates[index].prediction.scores, want[step])


def test_each_session_keeps_submission_order_across_threads(
    runtime: Runtime, model: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(runtime.scheduler.sessions.stores[0], monkeypatch)
    held = gate.hold(runtime)  # everything below is queued before the replica looks again
    sessions = [f"thread-{i}" for i in range(6)]

    def feed(sid: str) -> list[concurrent.futures.Future[Any]]:
        # Every chunk queued at once, without waiting: the queue must apply them in order.
        return [f for chunk in CHUNKS for f in runtime.sessions.submit([append(sid, chunk)], CallContext())]

    with concurrent.futures.ThreadPoolExecutor(len(sessions)) as pool:
        per_session = [f.result(30) for f in [pool.submit(feed, sid) for sid in sessions]]
    gate.released.set()
    held.result(30)
    for sid, futures in zip(sessions, per_session):
        updates = results(futures)
        cached = [u.cached_tokens for u in updates]
        assert cached == sorted(cached) and len(set(cached)) == len(cached)
        assert [u.new_session for u in updates] == [True] + [False] * (len(CHUNKS) - 1)
        for update, want in zip(updates, lone_scores(model, sid, CHUNKS, LABELS)):
            assert_scores(update.prediction.scores, want)
    # Each batch after the held one took the next chunk of every session: 4 batches of 6.
    assert gate.sizes[1:] == [len(sessions)] * len(CHUNKS)


def test_sessions_are_pinned_to_one_replica_each(model: Classifier) -> None:
    rt = start(model, replicas=2)
    try:
        sessions = [f"pinned-{i}" for i in range(12)]
        for chunk in CHUNKS[:2]:
            results(rt.sessions.submit([append(sid, chunk) for sid in sessions], CallContext()))
        stores = rt.scheduler.sessions.stores
        assert len(stores) == 2 and stores[0] is not stores[1]
        for sid in sessions:
            home = replica_of(sid, 2)
            assert sid in stores[home] and sid not in stores[1 - home]
        assert rt.sessions.stats().sessions == len(sessions)
    finally:
        rt.stop(grace_s=5)


def test_expired_or_cancelled_appends_are_dropped_before_they_start(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = runtime.scheduler.sessions.stores[0]
    gate = Gate(store, monkeypatch)
    held = gate.hold(runtime)
    soon = CallContext(deadline=time.monotonic() + 0.2)
    [late] = runtime.sessions.submit([append("late", "too late")], soon)
    hung_up = CallContext()
    [gone] = runtime.sessions.submit([append("gone", "nobody waits")], hung_up)
    hung_up.cancel.set("the client hung up")
    [kept] = runtime.sessions.submit([append("kept", "still wanted")], CallContext())
    past = CallContext(deadline=time.monotonic() - 1)
    [never] = runtime.sessions.submit([append("never", "expired at submit")], past)
    time.sleep(0.3)  # past `soon`'s deadline while the replica is held
    queue = runtime.scheduler.sessions
    depth = queue.depth
    [withdrawn] = runtime.sessions.submit([append("withdrawn", "cancelled by its caller")], CallContext())
    assert queue.depth == depth + 1
    withdrawn.cancel()  # the caller's future cancelled: its room in the queue is freed at once
    assert queue.depth == depth
    # Awaited with a deadline (as the edges do): answered at the deadline, its room freed.
    [outcome] = asyncio.run(
        runtime.sessions.append([append("awaited", "x")], CallContext(deadline=time.monotonic() + 0.1))
    )
    assert isinstance(outcome.error, DeadlineExceeded) and queue.depth == depth
    gate.released.set()
    results([held, kept])
    for future, error in ((late, DeadlineExceeded), (gone, Cancelled), (never, DeadlineExceeded)):
        with pytest.raises(error):
            future.result(30)
    assert "kept" in store and not any(
        sid in store for sid in ("late", "gone", "never", "withdrawn", "awaited")
    )
    assert runtime.sessions.stats().appends == 2


def test_queue_is_bounded_for_interactive_and_bulk(
    model: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = start(model, max_queue=4, bulk_share=0.5)
    try:
        gate = Gate(rt.scheduler.sessions.stores[0], monkeypatch)
        held = gate.hold(rt)
        bulk = CallContext(priority=Priority.BULK)
        queued = rt.sessions.submit([append("b1", "x"), append("b2", "y")], bulk)
        with pytest.raises(Overloaded, match="bulk"):
            rt.sessions.submit([append("b3", "z")], bulk)
        queued += rt.sessions.submit([append("i1", "x"), append("i2", "y")], CallContext())
        with pytest.raises(Overloaded, match="queue full"):
            rt.sessions.submit([append("i3", "z")], CallContext())
        with pytest.raises(InvalidInput) as too_many:
            rt.sessions.submit([append(f"s{i}", "x") for i in range(5)], CallContext())
        assert too_many.value.field == "session_id"
        # Bare closes (no text) free memory: they are queued however full the queue is.
        closes = rt.sessions.submit([append(sid, "", (), close=True) for sid in ("b1", "b2")], bulk)
        gate.released.set()
        assert all(u.triggered for u in results([held, *queued]))
        assert all(not u.triggered for u in results(closes))
        store = rt.scheduler.sessions.stores[0]
        assert not any(sid in store for sid in ("b1", "b2", "b3", "i3")) and "i1" in store
    finally:
        rt.stop(grace_s=5)


def test_close_runs_after_the_appends_queued_before_it(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    results(runtime.sessions.submit([append("talk", CHUNKS[0])], CallContext()))
    gate = Gate(runtime.scheduler.sessions.stores[0], monkeypatch)
    held = gate.hold(runtime)
    [before] = runtime.sessions.submit([append("talk", CHUNKS[1])], CallContext())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        closing = pool.submit(runtime.sessions.close, "talk")
        while runtime.scheduler.sessions.depth < 2:  # the close is queued behind the append
            time.sleep(0.01)
        [after] = runtime.sessions.submit([append("talk", CHUNKS[2])], CallContext())
        gate.released.set()
        assert closing.result(30) is True
    first, second = results([held, before, after])[1:]
    assert not first.new_session and first.cached_tokens > first.tokens_added
    # The close came between them: the later chunk starts afresh.
    assert second.new_session and second.cached_tokens == second.tokens_added
    assert runtime.sessions.close("never-opened") is False and runtime.sessions.close("") is False
    [ended] = runtime.sessions.submit([append("ending", CHUNKS[0], close=True)], CallContext())
    assert ended.result(30).triggered and "ending" not in runtime.scheduler.sessions.stores[0]
    assert runtime.sessions.stats().closed == 2


def test_idle_sessions_expire_without_a_request(model: Classifier) -> None:
    rt = start(model, idle_ttl_s=0.2)
    try:
        results(rt.sessions.submit([append("idle", CHUNKS[0])], CallContext()))
        deadline = time.monotonic() + 30
        while rt.sessions.stats().expired == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = rt.sessions.stats()
        assert stats.expired == 1 and stats.sessions == 0 and stats.bytes_cached == 0
    finally:
        rt.stop(grace_s=5)


class Panic(BaseException):
    """Stands in for pyo3's PanicException: a BaseException, not an Exception."""


def test_a_fault_in_a_session_batch_fails_only_its_appends(
    runtime: Runtime, model: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    results(runtime.sessions.submit([append("bystander", CHUNKS[0])], CallContext()))
    poison = set(model.tokens("xylophone")) - set(model.tokens("the"))
    decoder = model.network.decoder_model
    real = decoder.forward

    def panicky(*args: Any, **kwargs: Any) -> Any:  # FAKE FAULT on the poisoned text only
        if poison & set(kwargs["input_ids"].flatten().tolist()):
            raise Panic("kernel panicked")
        return real(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", panicky)
    futures = runtime.sessions.submit(
        [append("poisoned", "xylophone"), append("same-batch", CHUNKS[1])], CallContext()
    )
    for future in futures:
        with pytest.raises(BatchFailed, match="Panic"):
            future.result(30)
    later = results(runtime.sessions.submit(
        [append("bystander", CHUNKS[1]), append("same-batch", CHUNKS[2])], CallContext()
    ))  # fmt: skip
    assert not later[0].new_session and later[0].triggered  # untouched by the fault
    assert later[1].new_session  # its session was discarded: it says so and starts afresh
    assert runtime.ready and all(r.alive for r in runtime.pool.replicas)
    assert runtime.sessions.stats().dropped == 2  # the failed batch's two sessions, discarded


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    path = build(tmp_path_factory.mktemp("qwen3_5"), backbone="qwen3_5")
    return Classifier.from_pretrained(str(path), device="cpu")


def test_hybrid_backbone_sessions_through_the_runtime(hybrid: Classifier) -> None:
    rt = start(hybrid, strategy="every_n_tokens:4")
    try:
        sessions = ["h1", "h2", "h3"]
        rounds = [
            results(rt.sessions.submit([append(sid, chunk) for sid in sessions], CallContext()))
            for chunk in CHUNKS
        ]
    finally:
        rt.stop(grace_s=5)
    for index, sid in enumerate(sessions):
        store = SessionStore(hybrid)
        for updates, chunk in zip(rounds, CHUNKS):
            want = store.append(sid, chunk, LABELS, strategy=every_n_tokens(4))
            got = updates[index]
            assert (got.triggered, got.cached_tokens) == (want.triggered, want.cached_tokens)
            if want.prediction is not None:
                assert_scores(got.prediction.scores, want.prediction.scores)


def test_session_metrics_export_the_stores_summed(model: Classifier) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from gliclass_core.telemetry.metrics import value_of
    from gliclass_core.telemetry.session_metrics import SessionInstruments

    rt = start(model, replicas=2)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        SessionInstruments(provider.get_meter("test"), lambda: [rt])
        sessions = [f"metered-{i}" for i in range(6)]
        for chunk in CHUNKS[:2]:
            results(rt.sessions.submit([append(sid, chunk) for sid in sessions], CallContext()))
        assert rt.sessions.close(sessions[0])
        stats = rt.sessions.stats()
        data = reader.get_metrics_data()
        assert value_of(data, "gliclass.sessions.active") == stats.sessions == len(sessions) - 1
        assert value_of(data, "gliclass.sessions.cache.size") == stats.bytes_cached > 0
        assert value_of(data, "gliclass.sessions.cached_tokens") == stats.cached_tokens > 0
        assert value_of(data, "gliclass.sessions.tokens") == stats.tokens_computed > 0
        assert value_of(data, "gliclass.sessions.batches") == stats.batches >= 2  # two stores, two rounds
        assert value_of(data, "gliclass.sessions.batch.appends") == stats.batch_appends == 2 * len(sessions)

        def event(name: str) -> Any:
            return value_of(data, "gliclass.sessions.events", lambda a: a["gliclass.event"] == name)

        assert (event("created"), event("appended"), event("closed")) == (6, 12, 1)
        assert value_of(data, "gliclass.sessions.queue.depth") == 0
    finally:
        provider.shutdown()
        rt.stop(grace_s=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sid=st.one_of(st.text(max_size=300), st.just("ok-session")),
    text=st.one_of(st.text(max_size=80), st.sampled_from(["<<SEP>>", "fine text", ""])),
    labels=st.one_of(st.just(LABELS), st.lists(st.text(max_size=20), max_size=3).map(tuple)),
)
def test_hostile_appends_end_as_results_or_typed_errors(
    runtime: Runtime, sid: str, text: str, labels: tuple[str, ...]
) -> None:
    try:
        futures = runtime.sessions.submit([append(sid, text, labels)], CallContext())
    except InvalidInput as exc:
        assert exc.field in {"session_id", "text", "labels"}
        return
    try:
        update = futures[0].result(60)
    except InvalidInput as exc:  # found once tokenized, or no labels for a new session
        assert exc.field in {"text", "labels"}
        return
    assert update.session_id == sid and update.tokens_added >= 0
    assert runtime.ready


def test_an_awaited_close_ends_at_its_deadline_and_the_session_closes_after_the_queue(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(runtime.scheduler.sessions.stores[0], monkeypatch)
    held = gate.hold(runtime)  # the replica is busy: the close waits behind it

    async def close_soon() -> bool:
        return await runtime.sessions.close_async("gate", CallContext(deadline=time.monotonic() + 0.2))

    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        asyncio.run(close_soon())
    assert time.monotonic() - started < 10  # answered at its deadline, not when the batch ended
    gate.released.set()
    assert held.result(60).triggered
    assert "gate" in runtime.scheduler.sessions.stores[0]  # the expired close never ran
    assert asyncio.run(runtime.sessions.close_async("gate", CallContext())) is True
    assert "gate" not in runtime.scheduler.sessions.stores[0]
