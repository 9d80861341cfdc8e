"""Proto ↔ core conversion and the [grpc] config section, without a server."""

from __future__ import annotations

import grpc
import pytest

from gliclass_core.config import ConfigError, LabelSet
from gliclass_core.errors import BatchFailed, InvalidInput, NotReady, Overloaded
from gliclass_core.types import ModelInfo, Prediction
from server.grpc.config import GrpcConfig, parse_grpc_config
from server.proto import classifier_pb2 as pb
from server.wire import convert
from server.wire.status import status_for

SETS = {
    "support": LabelSet("support", ("billing", "bug"), threshold=0.3, multi_label=False, top_k=1, prompt="p")
}
CONFIG = GrpcConfig(max_items_per_request=3, max_text_chars=20, max_labels_per_item=3)


def convert_one(**fields: object) -> object:
    return convert.item_from_proto(pb.Item(**fields), SETS, CONFIG, index=4)


def test_item_with_labels_uses_defaults_and_explicit_overrides() -> None:
    item = convert_one(text="hi", labels=["a", "b"])
    assert (item.labels, item.threshold, item.multi_label, item.top_k, item.prompt) == (
        ("a", "b"),
        0.5,
        True,
        None,
        None,
    )
    item = convert_one(text="hi", labels=["a", "b"], threshold=0.25, multi_label=False, top_k=1, prompt="q")
    assert (item.threshold, item.multi_label, item.top_k, item.prompt) == (0.25, False, 1, "q")


def test_label_set_supplies_labels_and_defaults_that_the_item_can_override() -> None:
    item = convert_one(text="hi", label_set="support")
    assert (item.labels, item.threshold, item.multi_label, item.top_k, item.prompt) == (
        ("billing", "bug"),
        0.3,
        False,
        1,
        "p",
    )
    # proto3 `optional`: an explicit false / 0-ish value overrides the set's default.
    item = convert_one(text="hi", label_set="support", multi_label=True, threshold=0.0)
    assert (item.multi_label, item.threshold) == (True, 0.0)


def test_per_label_thresholds_fill_in_the_base_threshold() -> None:
    item = convert_one(text="hi", labels=["a", "b", "c"], threshold=0.6, label_thresholds={"b": 0.1})
    assert item.threshold == {"a": 0.6, "b": pytest.approx(0.1), "c": 0.6}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"labels": ["a"]}, "text"),
        ({"text": "x" * 21, "labels": ["a"]}, "text"),
        ({"text": "hi"}, "labels"),
        ({"text": "hi", "labels": ["a"], "label_set": "support"}, "label_set"),
        ({"text": "hi", "label_set": "nope"}, "label_set"),
        ({"text": "hi", "labels": ["a", "b", "c", "d"]}, "labels"),
        ({"text": "hi", "labels": ["a", "a"]}, "labels"),
        ({"text": "hi", "labels": ["a", ""]}, "labels"),
        ({"text": "hi", "labels": ["a"], "threshold": 1.5}, "threshold"),
        ({"text": "hi", "labels": ["a"], "threshold": float("nan")}, "threshold"),
        ({"text": "hi", "labels": ["a"], "top_k": 0}, "top_k"),
        ({"text": "hi", "labels": ["a"], "label_thresholds": {"z": 0.5}}, "label_thresholds"),
        ({"text": "hi", "labels": ["a"], "label_thresholds": {"a": -1.0}}, "label_thresholds"),
    ],
)
def test_bad_items_name_the_field_and_index(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        convert_one(**fields)
    assert (info.value.field, info.value.index) == (field, 4)
    assert f"item 4, field '{field}'" in str(info.value)


def test_request_level_limits() -> None:
    with pytest.raises(InvalidInput, match="at least one item"):
        convert.items_from_proto([], SETS, CONFIG)
    with pytest.raises(InvalidInput, match="4 items in one message, the limit is 3"):
        convert.items_from_proto([pb.Item(text="a", labels=["x"])] * 4, SETS, CONFIG)


def test_result_keeps_label_order_and_flags() -> None:
    pred = Prediction(scores={"b": 0.2, "a": 0.9}, labels=["a"], label_chunks=2, truncated=True)
    timings = convert.ItemTimings(queue_ms=float("nan"), compute_ms=3.0, total_ms=5.0)
    msg = convert.result_to_proto("id-1", pred, timings, "support")
    assert [(s.label, round(s.score, 3)) for s in msg.scores] == [("b", 0.2), ("a", 0.9)]
    assert (msg.id, list(msg.labels), msg.label_chunks, msg.truncated, msg.label_set) == (
        "id-1",
        ["a"],
        2,
        True,
        "support",
    )
    assert (msg.timings.queue_ms, msg.timings.compute_ms, msg.timings.total_ms) == (0.0, 3.0, 5.0)
    assert not msg.HasField("error")


def test_uncalibrated_scores_only_when_asked_and_available() -> None:
    timings = convert.ItemTimings(queue_ms=1.0, compute_ms=1.0, total_ms=2.0)
    calibrated = Prediction(
        scores={"a": 0.7, "b": 0.1}, labels=["a"], uncalibrated_scores={"a": 0.99, "b": 0.02}
    )
    asked = convert.result_to_proto("i", calibrated, timings, uncalibrated=True)
    assert [(s.label, round(s.score, 3), round(s.uncalibrated_score, 3)) for s in asked.scores] == [
        ("a", 0.7, 0.99),
        ("b", 0.1, 0.02),
    ]
    not_asked = convert.result_to_proto("i", calibrated, timings)
    assert not any(s.HasField("uncalibrated_score") for s in not_asked.scores)
    plain = Prediction(scores={"a": 0.7}, labels=["a"])
    assert (
        not convert.result_to_proto("i", plain, timings, uncalibrated=True)
        .scores[0]
        .HasField("uncalibrated_score")
    )
    item = pb.Item(text="t", labels=["a"], return_uncalibrated=True)
    assert item.return_uncalibrated and not pb.Item(text="t").return_uncalibrated


def test_error_result_carries_code_status_and_field() -> None:
    msg = convert.error_to_proto("x", InvalidInput("bad", field="labels", index=2))
    assert (msg.error.code, msg.error.status, msg.error.field) == (3, "INVALID_ARGUMENT", "labels")
    assert "item 2" in msg.error.message and not msg.scores


def test_status_mapping_is_one_table() -> None:
    assert status_for(Overloaded("full"))[0] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_for(NotReady("warming"))[0] is grpc.StatusCode.UNAVAILABLE
    assert status_for(BatchFailed("oom"))[0] is grpc.StatusCode.INTERNAL
    # Unexpected exceptions never leak their text to clients.
    assert status_for(KeyError("secret path")) == (grpc.StatusCode.INTERNAL, "internal error")


def test_model_info_and_label_sets() -> None:
    info = ModelInfo("builtin:minilm", "bi", "cpu", "float32", 256, 64, extra={"pooling": "mean"})
    msg = convert.model_info_to_proto(info, CONFIG)
    assert (msg.model_id, msg.max_length, msg.extra["pooling"], msg.limits.max_items_per_request) == (
        "builtin:minilm",
        256,
        "mean",
        3,
    )
    sets = convert.label_sets_to_proto({**SETS, "a": LabelSet("a", ("x",))})
    assert [s.name for s in sets.label_sets] == ["a", "support"]
    assert not sets.label_sets[0].HasField("top_k") and sets.label_sets[1].top_k == 1


def test_grpc_config_parses_and_rejects_with_the_key_named() -> None:
    cfg = parse_grpc_config(
        {"address": "127.0.0.1:0", "stream_max_in_flight": 8, "tls": {"cert_file": "c", "key_file": "k"}}
    )
    assert (cfg.address, cfg.stream_max_in_flight, cfg.tls.cert_file, cfg.tls.require_client_cert) == (
        "127.0.0.1:0",
        8,
        "c",
        False,
    )
    assert parse_grpc_config({}) == GrpcConfig()
    bad = [
        ({"adress": "x:1"}, "unknown key"),
        ({"max_text_chars": 0}, "max_text_chars"),
        ({"max_items_per_request": True}, "max_items_per_request"),
        ({"shutdown_grace_s": -1}, "shutdown_grace_s"),
        ({"address": "nohost"}, "address"),
        ({"tls": {"cert_file": "c"}}, "key_file"),
        ({"tls": {"cert_file": "c", "key_file": "k", "require_client_cert": True}}, "client_ca_file"),
    ]
    for table, key in bad:
        with pytest.raises(ConfigError, match=key):
            parse_grpc_config(table)


def test_tls_files_that_cannot_be_read_name_the_key(tmp_path: object) -> None:
    cfg = parse_grpc_config({"tls": {"cert_file": "/nonexistent/c.pem", "key_file": "/nonexistent/k.pem"}})
    with pytest.raises(ConfigError, match=r"\[grpc.tls\] cert_file: cannot read /nonexistent/c.pem"):
        cfg.tls.read()
