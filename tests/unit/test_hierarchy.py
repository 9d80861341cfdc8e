"""Hierarchical labels: flattening and nested results shaped exactly as the reference's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.hierarchy import (
    MAX_DEPTH,
    flatten,
    hierarchy_of,
    tree_from_labels,
    tree_from_nodes,
)
from gliclass_core.types import ClassifyItem

STRUCTURES: list[Any] = [
    {"sentiment": ["positive", "negative", "neutral"], "topic": ["product", "service", "shipping"]},
    {"category": {"electronics": ["phone", "laptop"], "clothing": ["shirt", "pants"]}, "urgent": "yes"},
    {"a": {"b": {"c": ["d", "e"]}}, "f": ["g"]},
    ["label1", "label2"],
]


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("separator", [".", "/", " > "])
def test_flattening_and_nesting_match_the_reference(structure: Any, separator: str) -> None:
    pytest.importorskip("gliclass")
    from gliclass.pipeline import build_hierarchical_output, flatten_hierarchical_labels

    tree = tree_from_labels(structure, separator)
    flat = flatten(tree)
    assert list(flat) == flatten_hierarchical_labels(structure, separator=separator)
    scores = {label: (i + 1) / 100 for i, label in enumerate(flat)}
    predictions = [{"label": k, "score": v} for k, v in scores.items() if v > 0.02]
    expected = build_hierarchical_output(predictions, structure, separator, scores)
    assert hierarchy_of(tree, scores) == expected


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ({"a": []}, "no labels"),
        ({}, "no labels"),
        ({"a": ["x", ""]}, "non-empty"),
        ({"": ["x"]}, "non-empty"),
        ({"a": [{"b": "c"}]}, "not a non-empty string"),
        ({"a": 3}, "expected a list"),
    ],
)
def test_malformed_trees_are_typed_errors(labels: Any, words: str) -> None:
    with pytest.raises(InvalidInput, match=words) as err:
        tree_from_labels(labels)
    assert err.value.field == "labels"


def test_depth_and_size_are_bounded() -> None:
    deep: Any = ["leaf"]
    for _ in range(MAX_DEPTH + 1):
        deep = {"g": deep}
    with pytest.raises(InvalidInput, match="deeper"):
        tree_from_labels(deep)
    with pytest.raises(InvalidInput, match="more than"):
        tree_from_labels({f"g{i}": ["a", "b", "c", "d"] for i in range(2000)})
    nodes: list[Any] = [("leaf", [])]
    for _ in range(MAX_DEPTH + 1):
        nodes = [("g", nodes)]
    with pytest.raises(InvalidInput, match="deeper"):
        tree_from_nodes(nodes)


def test_nodes_allow_groups_beside_labels() -> None:
    tree = tree_from_nodes([("spam", []), ("topic", [("sports", [("football", [])]), ("music", [])])])
    assert flatten(tree) == ("spam", "topic.sports.football", "topic.music")
    assert hierarchy_of(tree, {"spam": 0.1, "topic.sports.football": 0.7, "topic.music": 0.2}) == {
        "spam": 0.1,
        "topic": {"sports": {"football": 0.7}, "music": 0.2},
    }


def test_classify_with_nested_labels(builtin_classifier: Any) -> None:
    labels = {"sentiment": ["positive", "negative"], "topic": ["billing", "sports"]}
    (pred,) = builtin_classifier.classify(["I was charged twice, terrible"], labels, return_hierarchical=True)
    flat = builtin_classifier.classify(
        ["I was charged twice, terrible"],
        ["sentiment.positive", "sentiment.negative", "topic.billing", "topic.sports"],
    )[0]
    assert pred.scores == flat.scores and pred.labels == flat.labels
    assert pred.hierarchy == {
        "sentiment": {
            "positive": flat.scores["sentiment.positive"],
            "negative": flat.scores["sentiment.negative"],
        },
        "topic": {"billing": flat.scores["topic.billing"], "sports": flat.scores["topic.sports"]},
    }
    (plain,) = builtin_classifier.classify(["hello"], ["a", "b"], return_hierarchical=True)
    assert plain.hierarchy == plain.scores
    (none,) = builtin_classifier.classify(["hello"], labels)
    assert none.hierarchy is None


def test_per_text_nested_labels_and_separator(builtin_classifier: Any) -> None:
    preds = builtin_classifier.classify(
        ["one", "two"], [{"x": ["a"]}, {"y": ["b", "c"]}], label_separator="/", return_hierarchical=True
    )
    assert list(preds[0].scores) == ["x/a"] and list(preds[1].scores) == ["y/b", "y/c"]
    assert set(preds[1].hierarchy["y"]) == {"b", "c"}


def test_a_tree_that_does_not_match_the_labels_is_refused(builtin_classifier: Any) -> None:
    tree = tree_from_labels({"g": ["a", "b"]})
    with pytest.raises(InvalidInput) as err:
        builtin_classifier.prepare(ClassifyItem(text="t", labels=("g.a",), label_tree=tree), 2)
    assert err.value.field == "label_tree" and err.value.index == 2


@pytest.fixture(scope="module")
def uni_checkpoint(reference_checkpoint: Any) -> Path:
    return reference_checkpoint(  # type: ignore[no-any-return]
        "uni-first-simple", pooling_strategy="first", scorer_type="simple", prompt_first=True
    )


@pytest.mark.parametrize("long_text", ["truncate", "chunk"])
def test_hierarchical_result_matches_the_reference_pipeline(uni_checkpoint: Path, long_text: str) -> None:
    from gliclass import (
        GLiClassModel,
        ZeroShotClassificationPipeline,
        ZeroShotClassificationWithChunkingPipeline,
    )
    from transformers import AutoTokenizer

    from gliclass_core import Classifier

    labels = {"topic": {"sport": ["football", "tennis"], "money": ["finance"]}, "mood": ["happy", "sad"]}
    text = "Our team won the championship in overtime last night."
    model = GLiClassModel.from_pretrained(str(uni_checkpoint)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(uni_checkpoint))
    if long_text == "chunk":
        pipe: Any = ZeroShotClassificationWithChunkingPipeline(
            model, tokenizer, max_length=512, device="cpu", progress_bar=False, labels_chunk_size=2
        )
    else:
        pipe = ZeroShotClassificationPipeline(model, tokenizer, device="cpu", progress_bar=False)
    (expected,) = pipe([text], labels, threshold=0.0, return_hierarchical=True)
    clf = Classifier.from_pretrained(str(uni_checkpoint), device="cpu")
    (got,) = clf.classify([text], labels, return_hierarchical=True, long_text=long_text, labels_chunk_size=2)

    def leaves(tree: dict) -> list[float]:
        return [x for v in tree.values() for x in (leaves(v) if isinstance(v, dict) else [v])]

    assert got.hierarchy is not None
    assert _shape(got.hierarchy) == _shape(expected)
    np.testing.assert_allclose(leaves(got.hierarchy), leaves(expected), atol=1e-5)


def _shape(tree: dict) -> Any:
    return {k: _shape(v) if isinstance(v, dict) else None for k, v in tree.items()}
