"""JSON-lines parsing with clear errors, metrics against hand-counted values, the reliability PNG."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from gliclass_core.errors import InvalidInput
from gliclass_core.training.datasets import batches, parse_example, read_jsonl, split
from gliclass_core.training.evaluation import compute_metrics, format_report
from gliclass_core.training.reliability import reliability_png


def test_parse_list_and_scored_true_labels() -> None:
    ex = parse_example({"text": "t", "all_labels": ["a", "b", "c"], "true_labels": ["b"]})
    assert ex.targets == (0.0, 1.0, 0.0) and ex.true_labels == ("b",)
    soft = parse_example({"text": "t", "all_labels": ["a", "b"], "true_labels": {"a": 0.8, "b": 0.2}})
    assert soft.targets == (0.8, 0.2) and soft.true_labels == ("a",)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"all_labels": ["a"], "true_labels": []}, "text"),
        ({"text": "t", "all_labels": [], "true_labels": []}, "all_labels"),
        ({"text": "t", "all_labels": ["a", "a"], "true_labels": []}, "all_labels"),
        ({"text": "t", "all_labels": ["a"], "true_labels": ["z"]}, "true_labels"),
        ({"text": "t", "all_labels": ["a"], "true_labels": {"a": 2}}, "true_labels"),
        ({"text": "t", "all_labels": ["a"], "true_labels": "a"}, "true_labels"),
    ],
)
def test_bad_rows_name_the_field(row: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_example(row, index=4)
    assert err.value.field == field and err.value.index == 4


def test_read_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    good = json.dumps({"text": "t", "all_labels": ["a"], "true_labels": ["a"]})
    path.write_text(good + "\n\n" + good + "\n{not json\n")
    with pytest.raises(InvalidInput, match=r"d\.jsonl:4: not valid JSON"):
        read_jsonl(path)
    path.write_text(good + "\n" + json.dumps({"text": "", "all_labels": ["a"]}) + "\n")
    with pytest.raises(InvalidInput, match=r"d\.jsonl:2:.*text"):
        read_jsonl(path)
    path.write_text(good + "\n" + good + "\n")
    assert len(read_jsonl(path)) == 2


def test_split_and_batches_cover_every_example_once() -> None:
    rows = [parse_example({"text": "x" * (i + 1), "all_labels": ["a"], "true_labels": []}) for i in range(23)]
    train, held = split(rows, 0.2, seed=1)
    assert len(held) == 5 and len(train) == 18 and set(train).isdisjoint(held)
    seen = [e for b in batches(train, 4, shuffle=True, seed=3) for e in b]
    assert sorted(e.text for e in seen) == sorted(e.text for e in train)
    assert all(len(b) <= 4 for b in batches(train, 4, shuffle=True))


def test_metrics_against_hand_counts() -> None:
    labels = ["a", "b", "c"]
    rows = [
        ({"a"}, {"a": 0.9, "b": 0.1, "c": 0.2}),  # exact
        ({"b"}, {"a": 0.6, "b": 0.7, "c": 0.1}),  # b right, a false positive
        ({"c"}, {"a": 0.1, "b": 0.2, "c": 0.3}),  # c missed
        ({"a", "c"}, {"a": 0.8, "b": 0.1, "c": 0.9}),  # exact
    ]
    examples = [parse_example({"text": "t", "all_labels": labels, "true_labels": sorted(g)}) for g, _ in rows]
    report = compute_metrics(examples, [s for _, s in rows], threshold=0.5, multi_label=True)
    # a: tp 2 fp 1 fn 0 | b: tp 1 fp 0 fn 0 | c: tp 1 fp 0 fn 1
    assert report.accuracy == pytest.approx(0.5)
    a, b, c = report.per_label["a"], report.per_label["b"], report.per_label["c"]
    assert (a.tp, a.fp, a.fn, b.tp, c.tp, c.fn) == (2, 1, 0, 1, 1, 1)
    assert a.precision == pytest.approx(2 / 3) and a.f1 == pytest.approx(0.8)
    assert c.recall == pytest.approx(0.5) and c.f1 == pytest.approx(2 / 3)
    assert report.micro_precision == pytest.approx(4 / 5) and report.micro_recall == pytest.approx(4 / 5)
    assert report.macro_f1 == pytest.approx((0.8 + 1.0 + 2 / 3) / 3)
    single = compute_metrics(examples[:3], [s for _, s in rows[:3]], multi_label=False)
    assert single.accuracy == 1.0  # argmax picks a, b and c (0.3 is row 3's top score)
    table = format_report(report)
    assert "macro" in table and "a " in table and "0.8000" in table


def test_calibration_bins_and_png(tmp_path: Path) -> None:
    examples = [
        parse_example({"text": "t", "all_labels": ["a", "b"], "true_labels": ["a"]}) for _ in range(2)
    ]
    report = compute_metrics(examples, [{"a": 0.95, "b": 0.05}, {"a": 0.55, "b": 0.45}], bins=10)
    top = report.calibration[9]
    assert top.count == 1 and top.mean_score == pytest.approx(0.95) and top.positive_rate == 1.0
    # |0.95-1| + |0.05-0| + |0.55-1| + |0.45-0| over 4 slots
    assert report.expected_calibration_error == pytest.approx((0.05 + 0.05 + 0.45 + 0.45) / 4)
    out = reliability_png(report.calibration, tmp_path / "r.png", size=120)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (120, 120)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_len])
    assert len(raw) == 120 * (1 + 120 * 3)


def test_gold_predicted_share_and_predicted_labels_per_text() -> None:
    labels = ["a", "b", "c"]
    rows = [
        (["a"], {"a": 0.9, "b": 0.6, "c": 0.1}),  # gold predicted, 2 labels
        (["b"], {"a": 0.7, "b": 0.2, "c": 0.1}),  # gold missed, 1 label
        (["a", "c"], {"a": 0.8, "b": 0.1, "c": 0.4}),  # one of two gold labels: not all predicted
        ([], {"a": 0.2, "b": 0.9, "c": 0.95}),  # nothing true, 2 labels predicted
    ]
    examples = [parse_example({"text": "t", "all_labels": labels, "true_labels": g}) for g, _ in rows]
    report = compute_metrics(examples, [s for _, s in rows], threshold=0.5)
    assert report.gold_predicted_share == pytest.approx(1 / 3)
    assert report.mean_predicted_labels == pytest.approx((2 + 1 + 1 + 2) / 4)
    assert report.mean_predicted_labels_no_gold == pytest.approx(2.0)
    assert compute_metrics(examples[:2], [s for _, s in rows[:2]]).mean_predicted_labels_no_gold is None
    table = format_report(report)
    assert "gold labels all predicted: 0.3333" in table and "predicted labels per text: 1.50" in table
    assert "no true label: 2.00" in table
