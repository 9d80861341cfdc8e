"""Streaming sessions: parity with the reference streaming pipeline, and the session store's bounds.

The same chunk sequences go to the reference pipeline and to `SessionStore`; each step must trigger
the same sessions with the same cached lengths and scores (within 1e-5), for every strategy, on a
tiny Qwen3 and on the hybrid Qwen3.5 (linear-attention states beside the KV cache).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures import decoder_kv as dk
from fixtures import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gliclass_core import Classifier
from gliclass_core.errors import InvalidInput, UnsupportedModel
from gliclass_core.runtime.sessions import (
    SessionLimits,
    SessionStore,
    Strategy,
    composed,
    every_chunk,
    every_n_tokens,
    never,
    on_delimiter,
    parse_strategy,
    sliding_window,
)

pytestmark = pytest.mark.reference

LABELS = ["travel", "personal dreams", "sport", "finance and economy"]
PROMPT = "Classify the conversation:"
# Step by step, {session: chunk}; a session appears in every step from its first (the reference
# drops sessions absent from a call). Empty chunks, a late session, delimiters and long chunks.
STEPS: list[dict[str, str]] = [
    {"a": "Hello there, I want to travel.", "b": "Stocks fell"},
    {"a": " Next week", "b": " sharply today. The bank", "c": "We won the match!"},
    {"a": "", "b": " raised rates again.", "c": " Overtime."},
    {"a": " to Paris and then Rome.", "b": " x", "c": ""},
    {
        "a": " I dream of it.",
        "b": " Markets recovered later in the week after the news.",
        "c": " Fans cheered.",
    },
]


def _reference_strategies(kind: str) -> dict[str, Any]:
    from gliclass.streaming import (
        ComposedStrategy,
        EveryNTokensStrategy,
        NeverStrategy,
        OnDelimiterStrategy,
        SlidingWindowStrategy,
    )

    return {
        "every-chunk": {},
        "mixed": {
            "a": EveryNTokensStrategy(6),
            "b": OnDelimiterStrategy("."),
            "c": SlidingWindowStrategy(5),
        },
        "composed-never": {
            "a": ComposedStrategy(EveryNTokensStrategy(4), SlidingWindowStrategy(7)),
            "b": NeverStrategy(),
        },
    }[kind]


OURS: dict[str, dict[str, Strategy]] = {
    "every-chunk": {},
    "mixed": {"a": every_n_tokens(6), "b": on_delimiter("."), "c": sliding_window(5)},
    "composed-never": {"a": composed(every_n_tokens(4), sliding_window(7)), "b": never()},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    if not reference.available():
        pytest.skip("the reference gliclass package is not installed")
    root = tmp_path_factory.mktemp("decoder-kv-sessions")
    built: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in built:
            built[kind] = dk.build(root / kind, kind)
        return built[kind]

    return make


def _run_ours(
    store: SessionStore, strategies: dict[str, Strategy], prompt: str | None, batched: bool = False
) -> list[dict[str, Any]]:
    """Each step one session at a time, or (`batched`) all its sessions in one `append_many` call."""
    out = []
    for step in STEPS:
        row = {}
        ids = list(step)
        if batched:
            chosen = [strategies.get(s) for s in ids]
            updates = store.append_many(ids, [step[s] for s in ids], LABELS, strategies=chosen, prompt=prompt)
        else:
            updates = [
                store.append(s, step[s], LABELS, strategy=strategies.get(s), prompt=prompt) for s in ids
            ]
        for sid, update in zip(ids, updates):
            scores = update.prediction.scores if update.prediction is not None else None
            row[sid] = {
                "triggered": update.triggered,
                "scores": scores,
                "cached_length": update.cached_tokens,
            }
        out.append(row)
    return out


def _assert_same(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    fired = 0
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert mine.keys() == ref.keys()
        for sid in mine:
            assert mine[sid]["triggered"] == ref[sid]["triggered"], (step, sid)
            assert mine[sid]["cached_length"] == ref[sid]["cached_length"], (step, sid)
            if ref[sid]["triggered"]:
                fired += 1
                worst = max(abs(mine[sid]["scores"][k] - ref[sid]["scores"][k]) for k in LABELS)
                assert worst < 1e-5, (step, sid, mine[sid]["scores"], ref[sid]["scores"])
    assert fired >= 3, "the sequence must score several times"


@pytest.mark.parametrize("backbone", ["qwen3", "qwen3_5"])
@pytest.mark.parametrize("kind", sorted(OURS))
def test_sessions_match_the_reference_streaming_pipeline(
    checkpoint: Callable[[str], Path], backbone: str, kind: str
) -> None:
    path = checkpoint(backbone)
    prompt = PROMPT if kind == "mixed" else None
    theirs = dk.streaming_scores(path, STEPS, LABELS, strategies=_reference_strategies(kind), prompt=prompt)
    model = Classifier.from_pretrained(str(path), device="cpu")
    _assert_same(_run_ours(SessionStore(model), OURS[kind], prompt), theirs)
    _assert_same(_run_ours(SessionStore(model), OURS[kind], prompt, batched=True), theirs)


def test_max_cached_tokens_matches_the_reference_max_cache_len(checkpoint: Callable[[str], Path]) -> None:
    path = checkpoint("qwen3")
    theirs = dk.streaming_scores(path, STEPS, LABELS, max_cache_len=9)
    model = Classifier.from_pretrained(str(path), device="cpu")
    for batched in (False, True):
        store = SessionStore(model, SessionLimits(max_cached_tokens=9))
        _assert_same(_run_ours(store, {}, None, batched), theirs)


@pytest.fixture(scope="module")
def model(checkpoint: Callable[[str], Path]) -> Any:
    return Classifier.from_pretrained(str(checkpoint("qwen3")), device="cpu")


def test_the_byte_budget_drops_least_recently_used_sessions_and_counts_them(model: Any) -> None:
    probe = SessionStore(model)
    probe.append("x", "one two three four five", LABELS)
    one = probe.session_bytes("x")
    assert one > 0
    store = SessionStore(model, SessionLimits(max_bytes=int(one * 2.5)))
    for sid in ("s1", "s2", "s3"):
        store.append(sid, "one two three four five", LABELS)
    assert "s1" not in store and "s2" in store and "s3" in store
    assert store.stats.dropped == 1 and store.stats.bytes_cached <= int(one * 2.5)
    store.append("s2", " six", LABELS)  # s2 is now the most recent: s3 goes next
    store.append("s4", "one two three four five", LABELS)
    assert "s3" not in store and {"s2", "s4"} <= {s for s in ("s2", "s3", "s4") if s in store}
    assert store.stats.dropped == 2
    update = store.append("s1", "again", LABELS)
    assert update.new_session and update.cached_tokens == 1


def test_overflow_refuse_names_the_text_and_leaves_the_session_as_it_was(model: Any) -> None:
    store = SessionStore(model, SessionLimits(max_cached_tokens=6, overflow="refuse"))
    first = store.append("s", "one two three four", LABELS)
    assert first.cached_tokens == 4
    with pytest.raises(InvalidInput, match="max_cached_tokens") as refused:
        store.append("s", " five six seven", LABELS)
    assert refused.value.field == "text"
    assert store.append("s", " five six", LABELS).cached_tokens == 6  # what still fits is taken
    with pytest.raises(InvalidInput, match="max_cached_tokens"):
        store.append("fresh", "one two three four five six seven", LABELS)
    trimmed = SessionStore(model, SessionLimits(max_cached_tokens=6))  # the default keeps the last tokens
    trimmed.append("s", "one two three four", LABELS)
    assert trimmed.append("s", " five six seven", LABELS).cached_tokens == 6
    with pytest.raises(ValueError, match="overflow"):
        SessionLimits(overflow="drop")


def test_idle_sessions_expire_and_close_ends_one(model: Any) -> None:
    now = [0.0]
    store = SessionStore(model, SessionLimits(idle_ttl_s=10), clock=lambda: now[0])
    store.append("old", "hello", LABELS)
    now[0] = 5.0
    store.append("young", "hello", LABELS)
    now[0] = 12.0
    assert store.expire() == 1 and "old" not in store and "young" in store
    assert store.close("young") and not store.close("young")
    assert store.stats.expired == 1 and store.stats.closed == 1
    assert len(store) == 0 and store.stats.bytes_cached == 0 and store.stats.cached_tokens == 0


def test_max_sessions_makes_room_by_dropping_the_least_recent(model: Any) -> None:
    store = SessionStore(model, SessionLimits(max_sessions=2))
    for sid in ("a", "b", "c"):
        store.append(sid, "hi", LABELS)
    assert len(store) == 2 and "a" not in store and store.stats.dropped == 1


def test_a_session_keeps_its_prompt(model: Any) -> None:
    store = SessionStore(model)
    store.append("s", "hello", LABELS, prompt="one")
    with pytest.raises(InvalidInput, match="prompt"):
        store.append("s", " more", LABELS, prompt="two")


def test_scoring_does_not_change_the_session(model: Any) -> None:
    store = SessionStore(model)
    first = store.append("s", "The bank raised rates.", LABELS)
    again = store.append("s", "", LABELS, strategy=every_chunk())  # no tokens: nothing scored, nothing cached
    assert not again.triggered and again.cached_tokens == first.cached_tokens
    other = SessionStore(model)
    other.append("s", "The bank raised rates.", LABELS, strategy=never())
    extended = other.append("s", " Again.", LABELS, strategy=every_chunk())  # a new strategy replaces it
    mine = store.append("s", " Again.", LABELS)
    assert mine.prediction is not None and extended.prediction is not None
    assert mine.prediction.scores == pytest.approx(extended.prediction.scores, abs=1e-6)


def test_append_many_refuses_repeated_sessions(model: Any) -> None:
    with pytest.raises(InvalidInput, match="session_ids"):
        SessionStore(model).append_many(["a", "a"], ["x", "y"], LABELS)


def test_encoder_models_are_refused(builtin_classifier: Any) -> None:
    with pytest.raises(UnsupportedModel, match="decoder-kv"):
        SessionStore(builtin_classifier)


def test_a_bidirectional_backbone_keeps_no_sessions(checkpoint: Callable[[str], Path]) -> None:
    # EmbeddingGemma 2 is a bidirectional encoder: no KV cache to extend, as the reference refuses
    # streaming for it. The store refuses it; the reference's streaming pipeline refuses it too.
    clf = Classifier.from_pretrained(str(checkpoint("embedding_gemma2")), device="cpu")
    assert clf.info.extra["sessions"] == "false"
    with pytest.raises(UnsupportedModel, match="bidirectional encoder without one"):
        SessionStore(clf)
    with pytest.raises(ValueError, match="bidirectional encoder without a KV cache"):
        dk.streaming_scores(checkpoint("embedding_gemma2"), STEPS[:1], LABELS)


def test_the_runtime_session_service_refuses_a_bidirectional_backbone_by_name(
    checkpoint: Callable[[str], Path],
) -> None:
    from gliclass_core import ClassifyItem
    from gliclass_core.config import AppConfig, BatchingConfig, ModelConfig
    from gliclass_core.runtime import BatchPolicy, Runtime
    from gliclass_core.runtime.calls import CallContext
    from gliclass_core.runtime.sessions.service import SessionAppend
    from gliclass_core.service.sessions import require_sessions

    clf = Classifier.from_pretrained(str(checkpoint("embedding_gemma2")), device="cpu")
    config = AppConfig(model=ModelConfig(device="cpu"), batching=BatchingConfig(max_wait_ms=5))
    rt = Runtime.from_config(config, policy=BatchPolicy.from_config(config.batching), loader=lambda d: clf)
    rt.start()
    try:
        assert rt.wait_ready(60), rt.error
        assert not rt.sessions.supported
        with pytest.raises(UnsupportedModel, match="EmbeddingGemma2Model is a bidirectional encoder"):
            rt.sessions.submit([SessionAppend("s", ClassifyItem("a chunk", tuple(LABELS)))], CallContext())
        # what the gRPC / HTTP edges check before a session message
        with pytest.raises(UnsupportedModel, match="EmbeddingGemma2Model is a bidirectional encoder"):
            require_sessions(rt)
        # classic classification still runs on it, through the same runtime
        [future] = rt.submit([ClassifyItem("a chunk", tuple(LABELS))], CallContext())
        assert set(future.result(60).scores) == set(LABELS)
    finally:
        rt.stop(grace_s=5)


HOSTILE = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=40),
    st.sampled_from(["", " ", "<<SEP>>", "a<<LABEL>>", "\ud800"]),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(session_id=HOSTILE, text=HOSTILE, labels=st.one_of(st.lists(HOSTILE, max_size=3), HOSTILE))
def test_hostile_appends_end_as_results_or_typed_errors(
    model: Any, session_id: Any, text: Any, labels: Any
) -> None:
    store = SessionStore(model, SessionLimits(max_chunk_chars=30, max_session_id_length=20))
    try:
        update = store.append(session_id, text, labels)
    except InvalidInput as exc:
        assert exc.field in ("session_id", "text", "labels")
    else:
        assert update.session_id == session_id and update.cached_tokens >= 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("every_chunk", every_chunk()),
        ("every_n_tokens:200", every_n_tokens(200)),
        ("on_delimiter:\\n", on_delimiter("\n")),
        ("never", never()),
        ("sliding_window:512", sliding_window(512)),
        ("every_n_tokens:200+sliding_window:512", composed(every_n_tokens(200), sliding_window(512))),
    ],
)
def test_strategy_specs_parse_and_print_back(spec: str, expected: Strategy) -> None:
    assert parse_strategy(spec) == expected
    assert parse_strategy(expected.spec) == expected


@given(st.text(max_size=300))
def test_any_strategy_spec_parses_or_names_the_field(spec: str) -> None:
    try:
        parse_strategy(spec)
    except InvalidInput as exc:
        assert exc.field == "strategy"


def test_a_session_past_its_ttl_starts_afresh_with_the_default_strategy_before_any_sweep(model: Any) -> None:
    """A batch expires its store first: the append is resolved against a new session, not the stale one."""
    from concurrent.futures import Future

    from gliclass_core.runtime.batch_forming import Priority
    from gliclass_core.runtime.sessions.batch import run_session_batch
    from gliclass_core.runtime.sessions.queue import QueuedSessionWork, SessionBatch
    from gliclass_core.runtime.sessions.service import SessionAppend
    from gliclass_core.types import ClassifyItem

    now = [0.0]
    store = SessionStore(model, SessionLimits(idle_ttl_s=10), clock=lambda: now[0])

    def run(append: SessionAppend) -> Any:
        entry = QueuedSessionWork(append.session_id, append, Future(), Priority.INTERACTIVE, now[0])
        batch = SessionBatch(0, store, never(), (entry,), (), False, now[0])
        (outcome,) = run_session_batch(batch, "cpu")
        return outcome

    first = run(SessionAppend("s", ClassifyItem("hello there", tuple(LABELS))))
    assert first.new_session and not first.triggered  # the default strategy: never
    assert run(SessionAppend("s", ClassifyItem(" again", ()), every_chunk())).triggered
    now[0] = 11.0  # past the TTL; no sweep has run
    stale_labels = run(SessionAppend("s", ClassifyItem(" more", ())))
    assert isinstance(stale_labels, InvalidInput) and stale_labels.field == "labels"
    fresh = run(SessionAppend("s", ClassifyItem(" more", tuple(LABELS))))
    assert fresh.new_session and not fresh.triggered  # the default again, not the expired session's
    assert store.stats.expired == 1
