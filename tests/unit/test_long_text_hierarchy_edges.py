"""long_text and hierarchical labels at the edges: label-set config, gRPC conversion, Kafka routes/codec."""

from __future__ import annotations

import json

import pytest

from gliclass_core.config import ConfigError, parse_config
from gliclass_core.errors import InvalidInput
from gliclass_core.types import LongText, Prediction
from server.grpc.config import GrpcConfig
from server.proto import classifier_pb2 as pb
from server.wire import convert
from worker.codec import BadEvent, Event, Source, decode_event, encode_result
from worker.config import parse_kafka_config
from worker.routes import resolve

SETS_RAW = {
    "reviews": {
        "labels": {"sentiment": ["positive", "negative"], "topic": {"delivery": ["late", "damaged"]}},
        "return_hierarchical": True,
        "long_text": "chunk",
        "text_chunk_size": 500,
        "text_chunk_overlap": 50,
    },
    "flat": {"labels": ["a", "b"]},
}
FLAT_REVIEWS = ("sentiment.positive", "sentiment.negative", "topic.delivery.late", "topic.delivery.damaged")


def app(**kafka: object):
    raw: dict = {"label_sets": SETS_RAW}
    if kafka:
        raw["kafka"] = {"bootstrap_servers": "b:9092", **kafka}
    return parse_config(raw)


def test_label_set_with_nested_labels_and_chunking() -> None:
    sets = app().label_sets
    reviews = sets["reviews"]
    assert reviews.labels == FLAT_REVIEWS
    assert reviews.label_tree is not None and reviews.return_hierarchical
    assert reviews.long_text == LongText("chunk", 500, 50, 8)
    assert sets["flat"].long_text.mode == "truncate" and sets["flat"].label_tree is None


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"long_text": "split"}, "long_text"),
        ({"text_chunk_size": 10, "text_chunk_overlap": 10}, "text_chunk_overlap"),
        ({"labels": {"g": []}}, "no labels"),
        ({"label_separator": ""}, "label_separator"),
        ({"return_hierarchical": "yes"}, "return_hierarchical"),
        ({"label_tree": ["x"]}, "unknown key"),
    ],
)
def test_bad_label_set_settings_name_the_key(extra: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as err:
        parse_config({"label_sets": {"s": {"labels": ["a"], **extra}}})
    assert "label_sets.s" in str(err.value)


CONFIG = GrpcConfig(max_items_per_request=3, max_text_chars=2000, max_labels_per_item=8)


def test_grpc_item_with_a_label_tree_and_chunking() -> None:
    tree = [
        pb.LabelNode(
            name="sentiment", children=[pb.LabelNode(name="positive"), pb.LabelNode(name="negative")]
        ),
        pb.LabelNode(name="spam"),
    ]
    chunking = {"long_text": "chunk", "text_chunk_size": 300, "text_chunk_overlap": 0, "labels_chunk_size": 2}
    msg = pb.Item(text="hi", label_tree=tree, label_separator="/", return_hierarchical=True, **chunking)
    item = convert.item_from_proto(msg, app().label_sets, CONFIG, index=0)
    assert item.labels == ("sentiment/positive", "sentiment/negative", "spam")
    assert item.return_hierarchical and item.long_text == LongText("chunk", 300, 0, 2)


def test_grpc_item_takes_the_label_sets_settings_and_may_override_them() -> None:
    sets = app().label_sets
    item = convert.item_from_proto(pb.Item(text="hi", label_set="reviews"), sets, CONFIG, index=0)
    assert item.labels == FLAT_REVIEWS and item.label_tree == sets["reviews"].label_tree
    assert item.return_hierarchical and item.long_text.text_chunk_size == 500
    msg = pb.Item(text="hi", label_set="reviews", long_text="truncate", return_hierarchical=False)
    item = convert.item_from_proto(msg, sets, CONFIG, index=0)
    assert item.long_text.mode == "truncate" and not item.return_hierarchical
    msg = pb.Item(text="hi", label_set="reviews", text_chunk_size=900)
    assert convert.item_from_proto(msg, sets, CONFIG, index=0).long_text == LongText("chunk", 900, 50, 8)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"labels": ["a"], "label_tree": [pb.LabelNode(name="a")]}, "label_tree"),
        ({"label_tree": [pb.LabelNode(name="")]}, "label_tree"),
        ({"labels": ["a"], "long_text": "everything"}, "long_text"),
        ({"labels": ["a"], "long_text": "chunk", "text_chunk_size": 0}, "text_chunk_size"),
        ({"labels": ["a"], "long_text": "chunk", "text_chunk_size": 10, "text_chunk_overlap": 10},
         "text_chunk_overlap"),
        ({"label_tree": [pb.LabelNode(name="g", children=[pb.LabelNode(name=str(i)) for i in range(9)])]},
         "labels"),
    ],
)  # fmt: skip
def test_bad_grpc_items_name_the_field_and_index(fields: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        convert.item_from_proto(pb.Item(text="hi", **fields), {}, CONFIG, index=3)
    assert err.value.field == field and err.value.index == 3


def test_grpc_result_carries_the_hierarchy_and_chunk_count() -> None:
    pred = Prediction(scores={"g.a": 0.25, "b": 0.5}, labels=["b"], text_chunks=3,
                      hierarchy={"g": {"a": 0.25}, "b": 0.5})  # fmt: skip
    msg = convert.result_to_proto("x", pred, convert.ItemTimings(1, 2, 3))
    assert msg.text_chunks == 3
    (group, leaf) = msg.hierarchy
    assert (group.label, [(c.label, c.score) for c in group.children]) == ("g", [("a", 0.25)])
    assert (leaf.label, leaf.score, list(leaf.children)) == ("b", 0.5, [])
    plain = convert.result_to_proto(
        "x", Prediction(scores={"a": 1.0}, labels=["a"]), convert.ItemTimings(1, 2, 3)
    )
    assert list(plain.hierarchy) == [] and plain.text_chunks == 1


def test_kafka_route_settings_override_the_label_set() -> None:
    cfg = parse_kafka_config(
        app(
            routes=[
                {
                    "input": "in",
                    "output": "out",
                    "label_set": "reviews",
                    "long_text": "truncate",
                    "return_hierarchical": False,
                },
                {
                    "input": "in2",
                    "output": "out2",
                    "labels": {"g": ["x", "y"]},
                    "return_hierarchical": True,
                    "long_text": "chunk",
                    "labels_chunk_size": 1,
                },
                {"input": "in3", "output": "out3", "label_set": "reviews"},
            ]
        )
    )
    sets = app().label_sets
    first = resolve(Event(text="t"), cfg.routes[0], sets).item
    assert first.long_text.mode == "truncate" and not first.return_hierarchical
    assert first.label_tree == sets["reviews"].label_tree
    second = resolve(Event(text="t"), cfg.routes[1], sets).item
    assert second.labels == ("g.x", "g.y") and second.return_hierarchical
    assert second.long_text == LongText("chunk", 8192, 256, 1)
    third = resolve(Event(text="t"), cfg.routes[2], sets).item
    assert third.long_text == sets["reviews"].long_text and third.return_hierarchical


@pytest.mark.parametrize(
    ("route", "words"),
    [
        ({"long_text": "nope"}, "long_text"),
        ({"return_hierarchical": 1}, "return_hierarchical"),
        ({"labels": {"g": {}}}, "no labels"),
    ],
)
def test_bad_route_settings_name_the_route(route: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as err:
        parse_kafka_config(app(routes=[{"input": "in", "output": "out", "label_set": "flat", **route}]))
    assert "kafka.routes[0]" in str(err.value)


def test_kafka_event_with_nested_labels_and_hierarchical_output() -> None:
    event = decode_event(json.dumps({"text": "t", "labels": {"mood": ["happy", "sad"]}}).encode())
    assert event.labels == ("mood.happy", "mood.sad") and event.label_tree is not None
    cfg = parse_kafka_config(app(routes=[{"input": "in", "output": "out", "return_hierarchical": True}]))
    item = resolve(event, cfg.routes[0], {}).item
    assert item.label_tree == event.label_tree and item.return_hierarchical
    slash = parse_kafka_config(app(routes=[{"input": "in", "output": "out", "label_separator": "/"}]))
    assert resolve(event, slash.routes[0], {}).item.labels == ("mood/happy", "mood/sad")
    with pytest.raises(BadEvent) as err:
        decode_event(json.dumps({"text": "t", "labels": {"mood": []}}).encode())
    assert err.value.reason == "invalid_labels"
    pred = Prediction(scores={"mood.happy": 0.123456789, "mood.sad": 0.5}, labels=["mood.sad"], text_chunks=2,
                      hierarchy={"mood": {"happy": 0.123456789, "sad": 0.5}})  # fmt: skip
    out = json.loads(encode_result(event, Source("in", 0, 1), pred, "m", None, 1.0))
    assert out["hierarchy"] == {"mood": {"happy": 0.123457, "sad": 0.5}} and out["text_chunks"] == 2
    plain = json.loads(
        encode_result(event, Source("in", 0, 1), Prediction({"a": 1.0}, ["a"]), "m", None, 1.0)
    )
    assert "hierarchy" not in plain and "text_chunks" not in plain
