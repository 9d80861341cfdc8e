"""The collapse alarm's top-label share and the backlog-seconds estimate, as pure functions of time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gliclass_core.telemetry.backlog import BacklogEstimator
from gliclass_core.telemetry.collapse import OTHER, TopLabelShare, top_label


def test_a_route_whose_top_label_takes_every_prediction_crosses_the_threshold() -> None:
    shares = TopLabelShare(window_s=60, baseline_s=600, bucket_s=10, min_count=10)
    labels = ["billing", "bug report", "feature request"]
    for second in range(0, 600):  # ten minutes of a healthy mix: one prediction a second
        shares.add("tickets", "support", labels[second % 3], now=float(second))
    (healthy,) = shares.readings(now=599.0)
    assert healthy.share == pytest.approx(1 / 3, abs=0.02) and healthy.change == pytest.approx(0, abs=0.02)
    for second in range(600, 660):  # then every text gets the same top label
        shares.add("tickets", "support", "billing", now=float(second))
    (collapsed,) = shares.readings(now=659.0)
    assert collapsed.label == "billing" and collapsed.share >= 0.9
    assert collapsed.change is not None and collapsed.change >= 0.3
    assert collapsed.baseline_share == pytest.approx(1 / 3, abs=0.02)


def test_a_label_set_that_always_had_one_winner_has_no_change() -> None:
    shares = TopLabelShare(window_s=60, baseline_s=600, bucket_s=10, min_count=10)
    for second in range(0, 700):
        shares.add("spam", "spam-or-not", "not spam", now=float(second))
    (reading,) = shares.readings(now=699.0)
    assert reading.share == 1.0 and reading.change == 0.0


def test_too_few_predictions_give_no_reading_and_old_ones_leave_the_window() -> None:
    shares = TopLabelShare(window_s=60, baseline_s=600, bucket_s=10, min_count=20)
    for second in range(10):
        shares.add("r", "s", "a", now=float(second))
    assert shares.readings(now=10.0) == []
    for second in range(30):
        shares.add("r", "s", "a", now=float(second))
    assert len(shares.readings(now=30.0)) == 1
    assert shares.readings(now=200.0) == []  # the window moved on; the baseline alone gives nothing


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(max_size=5), st.text(max_size=5), st.text(max_size=8), st.floats(0, 5000, allow_nan=False)
        ),
        max_size=300,
    )
)
def test_any_stream_of_predictions_stays_bounded_and_shares_are_fractions(
    events: list[tuple[str, str, str, float]],
) -> None:
    shares = TopLabelShare(window_s=60, baseline_s=600, bucket_s=10, min_count=1, max_keys=4, max_labels=3)
    for route, label_set, label, at in sorted(events, key=lambda e: e[3]):
        shares.add(route, label_set, label, now=at)
    assert len(shares._buckets) <= 4
    for buckets in shares._buckets.values():
        assert len(buckets) <= shares._max_buckets
        assert all(len(counts) <= 4 for _i, counts in buckets)  # 3 labels + "other"
    for reading in shares.readings(now=5000.0):
        assert 0 < reading.share <= 1 and reading.count >= 1
        assert reading.change is None or -1 <= reading.change <= 1


def test_top_label_is_the_highest_score_and_other_is_a_label_name() -> None:
    assert top_label({"a": 0.2, "b": 0.9, "c": 0.9}) == "b"
    assert top_label({}) is None
    assert OTHER == "other"


def test_backlog_is_lag_over_the_drain_rate_of_the_last_minute() -> None:
    backlog = BacklogEstimator(window_s=60)
    tp = ("tickets", 0)
    for second in range(0, 121):  # drains 10 records/s while 5/s arrive: the lag shrinks 5/s
        backlog.observe(float(second), {tp: 10 * second}, {tp: 1000 + 5 * second})
    figures = backlog.routes()["tickets"]
    lag = 1000 + 5 * 120 - 10 * 120
    assert figures.lag == lag
    assert figures.drain_per_s == pytest.approx(10) and figures.arrival_per_s == pytest.approx(5)
    assert figures.seconds == pytest.approx(lag / 10)
    assert figures.drain_time_s == pytest.approx(lag / 5)


def test_a_stalled_route_has_a_large_finite_backlog_and_no_drain_time() -> None:
    backlog = BacklogEstimator(window_s=60)
    tp = ("tickets", 0)
    for second in range(0, 90):
        backlog.observe(float(second), {tp: 100}, {tp: 100 + second})
    figures = backlog.routes()["tickets"]
    assert figures.drain_per_s == 0 and figures.lag == 89
    assert figures.seconds == pytest.approx(89 * 60)  # one record per window, by definition
    assert figures.drain_time_s is None


def test_a_partition_assigned_later_is_rated_from_its_own_first_reading() -> None:
    backlog = BacklogEstimator(window_s=60, min_span_s=5)
    for second in range(0, 40):  # nothing assigned yet, then partition 0 from 10 s, 1 from 30 s
        positions, highs = {}, {}
        if second >= 10:
            positions[("a", 0)], highs[("a", 0)] = 4 * (second - 10), 4 * (second - 10) + 8
        if second >= 30:
            positions[("a", 1)], highs[("a", 1)] = 100 + 2 * (second - 30), 100 + 2 * (second - 30) + 4
        backlog.observe(float(second), positions, highs)
    figures = backlog.routes()["a"]
    assert figures.lag == 12
    assert figures.drain_per_s == pytest.approx(4 + 2)  # each partition over its own span
    assert figures.seconds == pytest.approx(12 / 6)


def test_no_figures_before_a_partition_was_seen_long_enough_and_none_without_lag() -> None:
    backlog = BacklogEstimator(window_s=60, min_span_s=5)
    backlog.observe(0.0, {("a", 0): 5}, {("a", 0): 50})
    backlog.observe(2.0, {("a", 0): 5}, {("a", 0): 50})
    assert backlog.routes() == {}, "two seconds say nothing about a rate"
    assert BacklogEstimator().routes() == {}
    backlog = BacklogEstimator(min_span_s=5)
    backlog.observe(0.0, {("b", 0): 3}, {("b", 0): 3})
    backlog.observe(6.0, {("b", 0): 3}, {("b", 0): 3})
    assert backlog.routes()["b"].seconds == 0 and backlog.routes()["b"].drain_time_s == 0


def test_the_share_passes_the_alert_threshold_when_the_rule_tests_assume() -> None:
    """docker/prometheus/alerts_test.yaml models a collapse from an even three-label mix at one
    prediction a second as a share rising 2/3 over the 5-min window, 0.9 after 255 s. The detector
    itself (10-s buckets) must agree within a bucket, or the documented time-to-alert is wrong."""
    shares = TopLabelShare()  # the defaults serve and worker run with
    labels = ["billing", "bug report", "feature request"]
    for second in range(3600):
        shares.add("tickets", "support", labels[second % 3], now=float(second))
    crossed = None
    for second in range(3600, 3600 + 400):
        shares.add("tickets", "support", "billing", now=float(second))
        (reading,) = shares.readings(now=float(second))
        if crossed is None and reading.share >= 0.9:
            crossed = second - 3600
            assert reading.change is not None and reading.change >= 0.3
    assert crossed is not None and 245 <= crossed <= 265, crossed
