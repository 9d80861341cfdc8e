"""Weak-supervision lines become training examples; few rows never drive early stopping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gliclass_core.errors import InvalidInput
from gliclass_core.training.datasets import read_jsonl
from server.app.commands.train import MIN_SELECTION_ROWS, plan_evaluation

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_descriptions_become_one_positive_example_each(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl",
        [
            {"label": "sport", "descriptions": ["a match report", "a transfer rumour"]},
            {"label": "politics", "descriptions": ["a vote in parliament"]},
            {"text": "Shares fell.", "all_labels": ["business", "sport"], "true_labels": ["business"]},
        ],
    )
    rows = read_jsonl(path)
    assert [(r.text, r.labels, r.true_labels) for r in rows] == [
        ("Shares fell.", ("business", "sport"), ("business",)),
        ("a match report", ("sport", "politics"), ("sport",)),
        ("a transfer rumour", ("sport", "politics"), ("sport",)),
        ("a vote in parliament", ("sport", "politics"), ("politics",)),
    ]


def test_a_description_line_may_name_its_own_label_set(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl",
        [{"label": "sport", "descriptions": ["a match report"], "all_labels": ["sport", "food"]}],
    )
    (row,) = read_jsonl(path)
    assert row.labels == ("sport", "food") and row.targets == (1.0, 0.0)


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ([{"label": "sport", "descriptions": ["a match"]}], "at least two labels"),
        ([{"label": "", "descriptions": ["x"]}], "label"),
        ([{"label": "a", "descriptions": []}, {"label": "b", "descriptions": ["y"]}], "descriptions"),
        ([{"label": "a", "descriptions": ["x", 3]}, {"label": "b", "descriptions": ["y"]}], "descriptions"),
        ([{"label": "a", "descriptions": ["x"], "all_labels": ["b"]}], "true_labels"),
    ],
)
def test_bad_description_lines_name_the_problem(tmp_path: Path, rows: list[object], needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        read_jsonl(write(tmp_path / "d.jsonl", rows))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["label", "descriptions", "all_labels"]),
            st.none() | st.text() | st.lists(st.text()) | st.integers(),
        ),
        max_size=4,
    )
)
def test_hostile_description_lines_end_as_examples_or_invalid_input(rows: list[dict]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        path.write_text(
            "".join(json.dumps({**r, "descriptions": r.get("descriptions", [])}) + "\n" for r in rows)
        )
        try:
            examples = read_jsonl(path)
        except InvalidInput:
            return
        assert all(e.text.strip() and sum(e.targets) == 1.0 and len(e.labels) >= 1 for e in examples)


def test_the_shipped_news_descriptions_cover_the_five_labels() -> None:
    rows = read_jsonl(ROOT / "data" / "news_fewshot" / "descriptions.jsonl")
    assert {r.true_labels[0] for r in rows} == {
        "business",
        "entertainment",
        "politics",
        "sport",
        "technology",
    }
    assert all(len(r.labels) == 5 for r in rows)


def test_few_rows_are_not_split_and_do_not_pick_an_epoch() -> None:
    fraction, select, message = plan_evaluation(40, None, None, "auto")
    assert fraction == 0 and not select and "too few" in message and "keeping the last" in message
    # The run: 40 rows, 10% held out = 4 rows; asked for, but never trusted to pick an epoch.
    fraction, select, message = plan_evaluation(40, 0.1, None, "auto")
    assert fraction == 0.1 and not select and "4 eval rows are too few" in message
    fraction, select, _ = plan_evaluation(40, 0.1, None, "on")
    assert select


def test_enough_rows_split_and_early_stop() -> None:
    n = MIN_SELECTION_ROWS * 10
    fraction, select, message = plan_evaluation(n, None, None, "auto")
    assert fraction == 0.1 and select and f"{MIN_SELECTION_ROWS} eval rows" in message
    assert plan_evaluation(n, None, None, "off")[1] is False
    assert plan_evaluation(10, None, MIN_SELECTION_ROWS, "auto") == (
        0.0,
        True,
        f"early stopping on {MIN_SELECTION_ROWS} eval rows: the best epoch by macro-F1 is kept",
    )
    assert plan_evaluation(10, None, 30, "auto")[1] is False
