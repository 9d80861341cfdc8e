"""The batched host path equals the one-item path: tokenizing many items in one call, vectorised
post-processing, the tiny host-bound model and its texts, and one event-loop wake-up per batch."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

import numpy as np
import pytest

from gliclass_core import Classifier, ClassifyItem, Example
from gliclass_core.runtime import bridge

ITEMS = [
    ClassifyItem("short", ("a", "b")),
    ClassifyItem(
        "A much longer text about the central bank, interest rates and the stock market " * 30,
        ("finance", "sport", "politics and government", "weather"),
        threshold={"finance": 0.2, "sport": 0.9},
        top_k=2,
    ),
    ClassifyItem("Our team won the championship.", ("sport", "music"), prompt="Topic?", multi_label=False),
    ClassifyItem(
        "I love hiking in the mountains.",
        ("travel", "outdoor sports", "cooking"),
        examples=(Example("Pasta recipe", ("cooking",)),),
        threshold=0.0,
    ),
    ClassifyItem("Ünïcödé text, emoji 🎉 and\ttabs", ("x", "y", "z"), threshold=1.0),
]

ARCHITECTURES = {
    "uni-text-first": dict(prompt_first=False),
    "uni-prompt-first": dict(prompt_first=True, pooling_strategy="avg"),
    "bi": dict(architecture_type="bi-encoder", pooling_strategy="avg"),
    "fused": dict(architecture_type="bi-encoder-fused", pooling_strategy="avg"),
}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def clf(request, tmp_path_factory) -> Classifier:
    from fixtures.models import write_checkpoint

    out = write_checkpoint(
        tmp_path_factory.mktemp("host-path") / request.param, **ARCHITECTURES[request.param]
    )
    return Classifier.from_pretrained(str(out), device="cpu", max_length=64)


def _one_by_one(clf: Classifier, item: ClassifyItem) -> list[tuple[list[int], object, int]]:
    """Each pass as the single-item packer builds it (ids tokenized with one `encode` call)."""
    packer = clf.packer
    if clf.config.architecture == "bi-encoder":
        rows = [packer.bi_row(item.text, tuple(item.labels), item.prompt)]
    else:
        rows = packer.marker_rows(item.text, tuple(item.labels), item.prompt, tuple(item.examples), None)
    return [(list(r.input_ids), r.payload, r.num_labels) for r in rows]


def test_batch_tokenization_equals_one_item_at_a_time(clf: Classifier) -> None:
    batched = clf.prepare_many(ITEMS)
    assert any(p.truncated for p in batched)  # the long text hits max_length=64
    for item, prepared in zip(ITEMS, batched):
        expected = _one_by_one(clf, item)
        assert len(prepared.passes) == len(expected)
        for p, (ids, payload, num_labels) in zip(prepared.passes, expected):
            assert isinstance(p.input_ids, np.ndarray) and p.input_ids.dtype == np.int64
            assert p.input_ids.tolist() == ids and p.num_labels == num_labels
            assert np.asarray(p.payload.markers).tolist() == list(payload.markers)
            assert len(p.input_ids) <= 64


def test_finish_many_equals_finish(clf: Classifier) -> None:
    prepared = clf.prepare_many(ITEMS)
    logits = [clf.forward(list(p.passes)) for p in prepared]
    many = clf.finish_many(prepared, logits)
    for p, item_logits, got in zip(prepared, logits, many):
        want = clf.finish(p, item_logits)
        assert got == want  # same scores (bit for bit), same labels in the same order


def test_finish_many_returns_the_error_of_a_bad_item(clf: Classifier) -> None:
    prepared = clf.prepare_many(ITEMS[:2])
    logits = [clf.forward(list(p.passes)) for p in prepared]
    out = clf.finish_many(prepared, [logits[0], [np.zeros(1, dtype=np.float32)]])
    assert out[0] == clf.finish(prepared[0], logits[0])
    assert isinstance(out[1], ValueError)


def test_classify_equals_item_by_item(clf: Classifier) -> None:
    texts = [item.text for item in ITEMS[:2]] * 3
    labels = [list(item.labels) for item in ITEMS[:2]] * 3
    together = clf.classify(texts, labels, batch_size=4)
    for text, item_labels, got in zip(texts, labels, together):
        (alone,) = clf.classify([text], item_labels, batch_size=1)
        assert list(got.scores) == list(alone.scores) and got.labels == alone.labels
        assert max(abs(got.scores[k] - alone.scores[k]) for k in got.scores) < 1e-5


def test_plan_rejects_what_prepare_rejects(clf: Classifier) -> None:
    from gliclass_core.errors import InvalidInput

    bad = ClassifyItem("text", ("ok", "a label far too long to fit " * 20))
    if clf.config.architecture != "uni-encoder":
        pytest.skip("only a uni-encoder puts the label text itself in the row")
    with pytest.raises(InvalidInput) as planned:
        clf.plan(bad, 3)
    with pytest.raises(InvalidInput) as prepared:
        clf.prepare(bad, 3)
    assert str(planned.value) == str(prepared.value) and planned.value.index == 3


def test_news_texts_are_deterministic_and_in_range() -> None:
    from server.app.host_bench import NEWS_LABELS, news_texts

    texts = news_texts(200, 20, 200, seed=5)
    assert texts == news_texts(200, 20, 200, seed=5) and texts != news_texts(200, 20, 200, seed=6)
    assert all(20 <= len(t.split()) <= 200 for t in texts)
    assert len(set(texts)) == len(texts) and len(NEWS_LABELS) == 10


def test_tiny_model_builds_and_classifies(tmp_path) -> None:
    from server.app.host_bench import build_tiny_model, host_ceiling, news_texts

    clf = Classifier.from_pretrained(str(build_tiny_model(tmp_path / "tiny")), device="cpu")
    assert clf.config.architecture == "uni-encoder"
    assert (
        clf.config.encoder_config["hidden_size"] == 32 and clf.config.encoder_config["num_hidden_layers"] == 1
    )
    texts = news_texts(16)
    preds = clf.classify(texts, ["sport", "politics"], batch_size=8)
    assert len(preds) == 16 and all(set(p.scores) == {"sport", "politics"} for p in preds)
    assert host_ceiling(clf, texts, repeats=1) > 0


def test_a_batch_of_completions_wakes_the_loop_once(monkeypatch) -> None:
    wakes: list[int] = []
    original = bridge._LoopBridge._wake

    def counting(self) -> None:  # count the real wake-ups, then do them
        wakes.append(1)
        original(self)

    monkeypatch.setattr(bridge._LoopBridge, "_wake", counting)

    async def main() -> list[int]:
        futures: list[Future[int]] = [Future() for _ in range(50)]
        waiting = asyncio.ensure_future(bridge.gather_futures(futures))
        singles = [bridge.when_done(f) for f in futures[:10]]
        await asyncio.sleep(0)
        with bridge.deferred_wakeups():
            for i, f in enumerate(futures):
                f.set_result(i)
            assert not wakes  # nothing woken inside the block
        await asyncio.gather(*singles)
        return await waiting

    assert asyncio.run(main()) == list(range(50))
    assert len(wakes) == 1
