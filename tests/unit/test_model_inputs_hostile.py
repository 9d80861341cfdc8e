"""build_items / validate_item / prepare over arbitrary unicode and argument types, on real models.

Every input ends as prepared passes or an InvalidInput naming the field (and the item): never a
TypeError from the tokenizer, never a content-less text scored. Hypothesis is derandomized, so
every run checks the same examples; the models are the builtin bi-encoder and a uni-encoder
checkpoint with the MiniLM backbone (tests/fixtures/models.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixtures.hostile import json_values, some_text
from fixtures.models import write_checkpoint
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gliclass_core import Classifier
from gliclass_core.errors import InvalidInput
from gliclass_core.items import build_items
from gliclass_core.processing.validation import has_content, lone_surrogate_at, validate_item
from gliclass_core.types import ClassifyItem, Example

PROPERTY = settings(
    derandomize=True,
    database=None,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

examples = st.one_of(
    st.none(),
    st.none(),
    json_values,
    st.lists(
        st.builds(
            Example,
            text=st.one_of(some_text, json_values),
            true_labels=st.one_of(st.lists(some_text, max_size=2).map(tuple), json_values),
        ),
        max_size=2,
    ),
)
classify_args = st.fixed_dictionaries(
    {
        "texts": st.one_of(some_text, st.lists(some_text, max_size=3), json_values),
        "labels": st.one_of(
            st.lists(some_text, min_size=1, max_size=4, unique=True),
            st.lists(st.lists(some_text, min_size=1, max_size=3, unique=True), min_size=1, max_size=3),
            json_values,
        ),
    },
    optional={
        "threshold": st.one_of(
            st.floats(0, 1),
            st.floats(allow_nan=True),
            st.dictionaries(some_text, st.floats(0, 1)),
            json_values,
        ),
        "multi_label": st.one_of(st.booleans(), json_values),
        "prompt": st.one_of(
            st.none(), some_text, st.lists(st.one_of(st.none(), some_text), max_size=3), json_values
        ),
        "examples": examples,
        "top_k": st.one_of(st.none(), st.integers(-2, 5), json_values),
    },
)


@pytest.fixture(scope="module")
def models(builtin_classifier: Any, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    uni = write_checkpoint(Path(tmp_path_factory.mktemp("uni")) / "ckpt")
    return [builtin_classifier, Classifier.from_pretrained(str(uni), device="cpu")]


def prepare_all(models: list[Any], items: list[ClassifyItem]) -> None:
    for index, item in enumerate(items):
        for clf in models:
            try:
                prepared = clf.prepare(item, index)
            except InvalidInput as exc:
                assert exc.index == index and exc.field, f"{exc!r} names no field"
                event(f"refused: {exc.field}")
                continue
            event("prepared")
            # Accepted: valid Unicode with content, and tokenized into non-empty passes.
            assert lone_surrogate_at(item.text) is None and has_content(item.text)
            assert all(lone_surrogate_at(x) is None and has_content(x) for x in item.labels)
            assert prepared.passes and all(p.num_tokens > 0 for p in prepared.passes)
            # "No content once tokenized" is decided before tokenizing: the tokenizer agrees.
            assert clf.tokenizer(item.text, add_special_tokens=False)["input_ids"], repr(item.text)
            for label in item.labels:
                assert clf.tokenizer(label, add_special_tokens=False)["input_ids"], repr(label)


@PROPERTY
@given(classify_args)
def test_any_classify_arguments_end_as_passes_or_invalid_input(models: list[Any], args: dict) -> None:
    try:
        items = build_items(**args)
    except InvalidInput as exc:
        assert exc.field, f"{exc!r} names no field"
        event(f"build_items refused: {exc.field}")
        return
    prepare_all(models, items)


@PROPERTY
@given(st.lists(some_text, min_size=1, max_size=3), st.lists(some_text, min_size=1, max_size=4, unique=True))
def test_any_unicode_text_and_labels(models: list[Any], texts: list[str], labels: list[str]) -> None:
    items = build_items(texts, labels)
    for index, item in enumerate(items):
        try:
            validate_item(item, index)
        except InvalidInput as exc:
            assert exc.index == index and exc.field in {"text", "labels"}
    prepare_all(models, items)


@pytest.mark.parametrize(
    ("texts", "labels", "field", "index"),
    [
        (["fine", "\ud800"], ["a", "b"], "text", 1),
        (["fine", "ok \udfff ok"], ["a", "b"], "text", 1),
        (["fine"], ["a", "\ud800"], "labels", 0),
        (["fine"], ["a", "b\x00"], "labels", 0),
        (["fine"], ["a", "\u200b"], "labels", 0),
        (["\x00"], ["sport", "finance"], "text", 0),
        (["fine", "\u200b\u200d\ufeff"], ["sport", "finance"], "text", 1),
        (["\x00\x01\x7f\t "], ["sport", "finance"], "text", 0),
        (["\u0301\u0301"], ["sport", "finance"], "text", 0),
    ],
)
def test_classify_refuses_what_no_tokenizer_can_take(
    models: list[Any], texts: list[str], labels: list[str], field: str, index: int
) -> None:
    for clf in models:
        with pytest.raises(InvalidInput) as info:
            clf.classify(texts, labels)
        assert (info.value.field, info.value.index) == (field, index)


def test_text_with_some_content_among_invisible_characters_is_scored(models: list[Any]) -> None:
    for clf in models:
        [prediction] = clf.classify(["\x00\u200bthe striker scored twice\u200b"], ["sport", "finance"])
        assert set(prediction.scores) == {"sport", "finance"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": 5}, "prompt"),
        ({"examples": 5}, "examples"),
        ({"examples": "text"}, "examples"),
        ({"examples": [Example("t", 5)]}, "examples"),  # type: ignore[arg-type]
        ({"examples": [Example("t", ("a\ud800",))]}, "examples"),
        ({"prompt": "\ud800"}, "prompt"),
    ],
)
def test_wrong_argument_types_name_their_field(models: list[Any], kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        models[1].classify(["fine"], ["a", "b"], **kwargs)
    assert info.value.field == field


def test_content_rule_is_the_unicode_categories_for_every_code_point() -> None:
    import unicodedata

    from gliclass_core.processing.validation import _NO_CONTENT_CATEGORIES

    def reference(text: str) -> bool:
        return any(c != "\ufffd" and unicodedata.category(c) not in _NO_CONTENT_CATEGORIES for c in text)

    wrong = [
        hex(cp)
        for cp in range(0x110000)
        if has_content(chr(cp)) != reference(chr(cp))
        or has_content("\u200b\x00 " + chr(cp)) != reference(chr(cp))
    ]
    assert not wrong
    assert not has_content("\x00" * 1_000_000) and has_content("\u200b" * 300_000 + "a")


def test_label_checks_are_cached_only_for_small_label_lists() -> None:
    from gliclass_core.processing import validation

    cache = validation._valid_labels_cached
    small = ("sport", "finance", "label cache probe")
    validate_item(ClassifyItem("fine", small))
    validate_item(ClassifyItem("fine", small))
    assert cache.cache_info().hits >= 1
    # Distinct huge label lists (hostile calls) are checked each time and never kept.
    before = cache.cache_info().currsize
    for i in range(3):
        huge = ("sport", f"{i}" + "x" * validation.CACHED_LABEL_CHARS)
        validate_item(ClassifyItem("fine", huge))
        with pytest.raises(InvalidInput, match=r"duplicate label '\dx{10}.*\.\.\. \(\d+ characters\)"):
            validate_item(ClassifyItem("fine", (*huge, huge[1])))
    assert cache.cache_info().currsize == before
