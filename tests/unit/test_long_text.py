"""Long-document mode ("chunk"): parity with the reference's chunking pipeline, options, batching."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.long_text import (
    MAX_CHUNK_PASSES,
    chunk_text,
    label_groups,
    long_text_options,
)
from gliclass_core.types import ClassifyItem, LongText

LABELS = ["travel", "dreams", "sport", "science", "politics", "finance", "technology"]
LONG = (
    "The stock market fell sharply after the central bank raised interest rates. "
    "Our team won the championship in overtime last night. One day I will see the world! "
    "The new smartphone has an impressive camera but poor battery life. "
    "Parliament passed the budget after a long debate about taxes and spending."
)
TEXTS = [LONG, "One day I will see the world!"]
CHUNKING = {"text_chunk_size": 120, "text_chunk_overlap": 30, "labels_chunk_size": 3}


@pytest.mark.parametrize(
    ("length", "size", "overlap"), [(0, 5, 1), (5, 5, 1), (6, 5, 1), (23, 5, 2), (100, 7, 0), (40, 10, 9)]
)
def test_chunk_text_cuts_like_the_reference(length: int, size: int, overlap: int) -> None:
    pytest.importorskip("gliclass")
    from gliclass.pipeline import ZeroShotClassificationWithChunkingPipeline as Ref

    text = "".join(chr(ord("a") + i % 26) for i in range(length))
    expected = Ref.chunk_text(types.SimpleNamespace(), text, size, overlap)
    assert chunk_text(text, size, overlap) == expected
    # Dropping each later chunk's overlap gives the text back: nothing lost, nothing repeated.
    assert "".join(c[overlap:] if i else c for i, c in enumerate(chunk_text(text, size, overlap))) == text


def test_label_groups_keep_order() -> None:
    assert label_groups(LABELS, 3) == [tuple(LABELS[:3]), tuple(LABELS[3:6]), tuple(LABELS[6:])]


@pytest.fixture(scope="module")
def uni_checkpoint(reference_checkpoint: Any) -> Path:
    return reference_checkpoint(  # type: ignore[no-any-return]
        "uni-first-simple", pooling_strategy="first", scorer_type="simple", prompt_first=True
    )


def _reference(checkpoint: Path, multi_label: bool, prompt: str | None = None) -> list[dict[str, float]]:
    from gliclass import GLiClassModel, ZeroShotClassificationWithChunkingPipeline
    from transformers import AutoTokenizer

    model = GLiClassModel.from_pretrained(str(checkpoint)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    pipe = ZeroShotClassificationWithChunkingPipeline(
        model, tokenizer, max_length=512, device="cpu", progress_bar=False,
        classification_type="multi-label" if multi_label else "single-label", **CHUNKING,
    )  # fmt: skip
    # One text per call: the reference pools over padding, so only batch size 1 is well defined.
    out = []
    for text in TEXTS:
        (scores,) = pipe([text], LABELS, threshold=0.0, return_hierarchical=True, prompt=prompt)
        out.append(scores)
    return out


def test_chunk_mode_matches_the_reference_with_labels_after_the_text(reference_checkpoint: Any) -> None:
    from gliclass_core import Classifier

    checkpoint = reference_checkpoint(
        "uni-avg-mlp-norm", pooling_strategy="avg", scorer_type="mlp", normalize_features=True,
        prompt_first=False,
    )  # fmt: skip
    expected = _reference(checkpoint, multi_label=True)
    clf = Classifier.from_pretrained(str(checkpoint), device="cpu")
    preds = clf.classify(TEXTS, LABELS, long_text="chunk", **CHUNKING)
    for want, got in zip(expected, preds):
        np.testing.assert_allclose([got.scores[k] for k in LABELS], [want[k] for k in LABELS], atol=1e-5)


@pytest.mark.parametrize("multi_label", [True, False], ids=["multi", "single"])
@pytest.mark.parametrize("prompt", [None, "Classify the topic:"], ids=["no-prompt", "prompt"])
def test_chunk_mode_matches_the_reference_pipeline(
    uni_checkpoint: Path, multi_label: bool, prompt: str | None
) -> None:
    from gliclass_core import Classifier

    expected = _reference(uni_checkpoint, multi_label, prompt)
    clf = Classifier.from_pretrained(str(uni_checkpoint), device="cpu")
    preds = clf.classify(TEXTS, LABELS, multi_label=multi_label, prompt=prompt, long_text="chunk", **CHUNKING)
    for want, got in zip(expected, preds):
        np.testing.assert_allclose([got.scores[k] for k in LABELS], [want[k] for k in LABELS], atol=1e-5)
    assert preds[0].text_chunks == len(chunk_text(LONG, 120, 30)) > 1
    assert preds[1].text_chunks == 1 and preds[0].label_chunks == 3
    if not multi_label:
        assert sum(preds[0].scores.values()) == pytest.approx(1.0)
        assert preds[0].labels == [max(preds[0].scores, key=preds[0].scores.__getitem__)]
    # Batched (the two texts' passes in one forward) equals one text at a time.
    alone = clf.classify(TEXTS[:1], LABELS, multi_label=multi_label, prompt=prompt, long_text="chunk",
                         batch_size=1, **CHUNKING)  # fmt: skip
    np.testing.assert_allclose(list(alone[0].scores.values()), list(preds[0].scores.values()), atol=1e-5)


def test_chunk_mode_scores_what_truncation_cuts_away(builtin_classifier: Any) -> None:
    # 600 filler words push the sports sentence past MiniLM's 512 tokens: truncation never sees it.
    text = "the " * 600 + "The striker scored twice and the team won the football match."
    labels = ["football", "cooking"]
    cut = builtin_classifier.classify([text], labels)[0]
    chunked = builtin_classifier.classify([text], labels, long_text="chunk", text_chunk_size=100,
                                          text_chunk_overlap=0)[0]  # fmt: skip
    whole = builtin_classifier.classify(["The striker scored twice and the team won the football match."],
                                        labels)[0]  # fmt: skip
    assert cut.truncated and not chunked.truncated and chunked.text_chunks > 1
    # The last 100-character chunk is exactly the sports sentence; the max over chunks finds it.
    assert chunked.scores["football"] == pytest.approx(whole.scores["football"], abs=1e-5)
    assert chunked.scores["football"] > cut.scores["football"] + 0.05


def test_bi_encoder_chunk_scores_are_the_max_over_chunks(builtin_classifier: Any) -> None:
    # The builtin model is a bi-encoder: labels are scored independently, so label groups do not
    # matter and each label's chunked score is its best score over the text's chunks.
    text = "Refund my card payment please. " * 20 + "The Lakers won the game in overtime."
    labels = ["billing", "sports"]
    pred = builtin_classifier.classify([text], labels, long_text="chunk", text_chunk_size=200,
                                       text_chunk_overlap=40, labels_chunk_size=1)[0]  # fmt: skip
    pieces = builtin_classifier.classify(chunk_text(text, 200, 40), labels)
    assert pred.text_chunks == len(pieces) > 1
    for label in labels:
        assert pred.scores[label] == pytest.approx(max(p.scores[label] for p in pieces), abs=1e-5)
    assert builtin_classifier.classify([text], labels)[0].text_chunks == 1  # "truncate" stays the default


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"long_text": "split"}, "long_text"),
        ({"long_text": "chunk", "text_chunk_size": 0}, "text_chunk_size"),
        ({"long_text": "chunk", "labels_chunk_size": -1}, "labels_chunk_size"),
        ({"long_text": "chunk", "text_chunk_size": 100, "text_chunk_overlap": 100}, "text_chunk_overlap"),
        ({"long_text": "chunk", "text_chunk_overlap": -1}, "text_chunk_overlap"),
        ({"long_text": "chunk", "text_chunk_size": True}, "text_chunk_size"),
    ],
)
def test_invalid_options_are_typed_errors(builtin_classifier: Any, kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        builtin_classifier.classify(["some text"], ["a", "b"], **kwargs)
    assert err.value.field == field


def test_too_many_passes_is_refused_before_any_work(builtin_classifier: Any) -> None:
    options = long_text_options("chunk", text_chunk_size=2, text_chunk_overlap=1, labels_chunk_size=1)
    item = ClassifyItem(text="x" * (MAX_CHUNK_PASSES + 10), labels=("a", "b"), long_text=options)
    with pytest.raises(InvalidInput, match="passes") as err:
        builtin_classifier.prepare(item, 4)
    assert err.value.field == "long_text" and err.value.index == 4


def test_an_item_with_a_bad_long_text_object_is_refused(builtin_classifier: Any) -> None:
    item = ClassifyItem(text="hello", labels=("a",), long_text=LongText(mode="chunk", text_chunk_size=-3))
    with pytest.raises(InvalidInput) as err:
        builtin_classifier.prepare(item, 0)
    assert err.value.field == "text_chunk_size"


def test_whitespace_only_chunks_are_skipped(builtin_classifier: Any) -> None:
    text = "Refund my payment." + " " * 400 + "The team won."
    pred = builtin_classifier.classify([text], ["billing", "sports"], long_text="chunk",
                                       text_chunk_size=100, text_chunk_overlap=0)[0]  # fmt: skip
    assert pred.text_chunks == 2  # 5 chunks, 3 of them blank


def test_scheduler_batches_chunk_passes_with_other_traffic(builtin_classifier: Any) -> None:
    from gliclass_core.runtime.batch_forming import BatchPolicy
    from gliclass_core.runtime.scheduler import Scheduler

    policy = BatchPolicy(max_batch_tokens=1 << 20, max_wait_s=0.01, min_padding_efficiency=0.0)
    scheduler = Scheduler(policy, max_queue=100)
    scheduler.open(builtin_classifier, replicas=1)
    options = long_text_options("chunk", text_chunk_size=200, text_chunk_overlap=20, labels_chunk_size=1)
    long_item = ClassifyItem(text="Refund my card payment please. " * 30, labels=("billing", "sports"),
                             long_text=options)  # fmt: skip
    short_item = ClassifyItem(text="The Lakers won", labels=("billing", "sports"))
    futures = scheduler.submit([long_item, short_item])
    batch = scheduler.next_batch()
    assert batch is not None
    rows = {(id(e.item), e.pass_index) for e in batch.entries}
    n_long = len(builtin_classifier.prepare(long_item).passes)
    assert n_long > 2 and len(rows) == n_long + 1  # every chunk pass and the short item in one batch
    logits = builtin_classifier.forward(batch.passes)
    scheduler.complete(batch, logits, "cpu")
    got = [f.result(5) for f in futures]
    offline = builtin_classifier.classify([long_item.text], ["billing", "sports"], long_text=options)[0]
    assert got[0].scores == pytest.approx(offline.scores, abs=1e-5)
    assert got[0].text_chunks == offline.text_chunks > 1
    scheduler.close(0.1)
