"""The [kafka] section: validation messages name the key; client settings pass through."""

from __future__ import annotations

import pytest

from gliclass_core.config import ConfigError, load_config, parse_config, redact
from worker.config import parse_kafka_config

BASE = {"bootstrap_servers": "b:9092", "routes": [{"input": "in", "output": "out", "label_set": "s"}]}


def parse(kafka, sets=None):
    return parse_kafka_config(parse_config({"label_sets": sets or {"s": {"labels": ["a"]}}, "kafka": kafka}))


def test_defaults_and_client_pass_through():
    cfg = parse({**BASE, "client": {"security.protocol": "SASL_SSL", "sasl.password": "hunter2"}})
    route = cfg.routes[0]
    assert (route.dlq, route.partitioning, route.over_length) == ("in.dlq", "input", "truncate")
    assert cfg.delivery == "at-least-once" and cfg.group_id == "gliclass"
    consumer = cfg.consumer_settings()
    assert consumer["sasl.password"] == "hunter2" and consumer["enable.auto.commit"] is False
    assert "isolation.level" not in consumer
    assert "hunter2" not in str(redact(consumer))


def test_exactly_once_settings():
    cfg = parse({**BASE, "delivery": "exactly-once", "group_id": "g", "instance_id": "w1"})
    assert cfg.consumer_settings()["isolation.level"] == "read_committed"
    assert cfg.producer_settings()["transactional.id"] == "g.w1"


@pytest.mark.parametrize(
    ("kafka", "needle"),
    [
        ({"routes": BASE["routes"]}, "bootstrap_servers"),
        ({"bootstrap_servers": "b"}, "routes"),
        ({**BASE, "delivery": "maybe"}, "delivery"),
        ({**BASE, "batch_size": 0}, "batch_size"),
        ({**BASE, "bogus": 1}, "bogus"),
        ({**BASE, "client": {"enable.auto.commit": True}}, "enable.auto.commit"),
        ({**BASE, "routes": [{"input": "in", "output": "out", "label_set": "nope"}]}, "nope"),
        ({**BASE, "routes": [{"input": "in", "output": "in"}]}, "different"),
        ({**BASE, "routes": [{"input": "a", "output": "b"}, {"input": "b", "output": "c"}]}, "loop"),
        ({**BASE, "routes": [{"input": "in", "output": "o", "over_length": "x"}]}, "over_length"),
        ({**BASE, "routes": [{"input": "in", "output": "o", "session": "id"}]}, "session must be"),
        (
            {**BASE, "routes": [{"input": "in", "output": "o", "emit": "every"}]},
            'emit need.* session = "key"',
        ),
        ({**BASE, "routes": [{"input": "in", "output": "o", "session": "key", "emit": "x"}]}, "emit"),
        (
            {**BASE, "routes": [{"input": "in", "output": "o", "session": "key", "strategy": "soon"}]},
            "strategy",
        ),
        (
            {**BASE, "routes": [{"input": "in", "output": "o", "session": "key", "session_lookback": 0}]},
            "lookback",
        ),
    ],
)
def test_invalid_sections_name_the_problem(kafka, needle):
    with pytest.raises(ConfigError, match=needle):
        parse(kafka)


def test_session_route_options():
    route = {"input": "in", "output": "out", "label_set": "s", "session": "key"}
    plain = parse({**BASE, "routes": [route]}).routes[0]
    assert (plain.session, plain.strategy, plain.emit, plain.session_lookback) == ("key", None, "every", 1000)
    tuned = parse(
        {
            **BASE,
            "routes": [
                {**route, "strategy": "every_n_tokens:64", "emit": "on_trigger", "session_lookback": 50}
            ],
        }
    ).routes[0]
    assert tuned.strategy is not None and tuned.strategy.spec == "every_n_tokens:64"
    assert (tuned.emit, tuned.session_lookback) == ("on_trigger", 50)
    assert parse(BASE).routes[0].session is None


def test_env_overrides_reach_the_client(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[label_sets.s]\nlabels = ["a"]\n[kafka]\nbootstrap_servers = "b:1"\n'
        '[[kafka.routes]]\ninput = "in"\noutput = "out"\nlabel_set = "s"\n'
    )
    env = {"GLICLASS_KAFKA__CLIENT__SASL_PASSWORD": "pw", "GLICLASS_KAFKA__DELIVERY": "exactly-once"}
    cfg = parse_kafka_config(load_config(path, env))
    assert cfg.client["sasl.password"] == "pw" and cfg.exactly_once
