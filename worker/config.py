"""The [kafka] section: broker settings, delivery mode and routes, validated once into frozen data."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gliclass_core.config import LONG_TEXT_KEYS, AppConfig, ConfigError, parse_long_text
from gliclass_core.errors import InvalidInput
from gliclass_core.processing.hierarchy import flatten, tree_from_labels
from gliclass_core.runtime.sessions.strategies import Strategy, parse_strategy
from gliclass_core.types import LabelNode, LongText

DELIVERY_MODES = ("at-least-once", "exactly-once")
OVER_LENGTH = ("truncate", "reject")
PARTITIONING = ("input", "key")
SESSION_SOURCES = ("key",)
EMIT = ("every", "on_trigger")
#: Records per partition read back to rebuild conversations after a rebalance (`session_lookback`).
DEFAULT_LOOKBACK = 1000
#: Characters of text per partition that look-back keeps at most (`session_lookback_chars`).
DEFAULT_LOOKBACK_CHARS = 4_000_000
SESSION_KEYS = ("strategy", "emit", "session_lookback", "session_lookback_chars")

# librdkafka settings the worker owns; a user value would break delivery guarantees.
RESERVED_CLIENT_KEYS = (
    "enable.auto.commit",
    "enable.auto.offset.store",
    "transactional.id",
    "isolation.level",
)


@dataclass(frozen=True)
class Route:
    """One input topic: how its events are labelled and where results and dead letters go."""

    input: str
    output: str
    dlq: str
    label_set: str | None = None
    labels: tuple[str, ...] | None = None
    threshold: float | None = None
    multi_label: bool | None = None
    top_k: int | None = None
    max_text_chars: int | None = None
    over_length: str = "truncate"
    partitioning: str = "input"
    # Long-text and hierarchical settings; None: the label set's (else the defaults).
    long_text: LongText | None = None
    return_hierarchical: bool | None = None
    label_separator: str = "."
    label_tree: tuple[LabelNode, ...] | None = None  # from `labels = {group = [...]}`, not a key
    # Sessions (`session = "key"`): the record key names the conversation each record extends.
    session: str | None = None
    strategy: Strategy | None = None  # None: the [sessions] default
    emit: str = "every"
    session_lookback: int = DEFAULT_LOOKBACK
    session_lookback_chars: int = DEFAULT_LOOKBACK_CHARS


@dataclass(frozen=True)
class KafkaConfig:
    """Everything the worker reads from [kafka]; `client` passes straight through to librdkafka."""

    bootstrap_servers: str
    routes: tuple[Route, ...]
    group_id: str = "gliclass"
    delivery: str = "at-least-once"
    instance_id: str = field(default_factory=socket.gethostname)
    batch_size: int = 256
    max_in_flight: int = 4096
    poll_timeout_ms: int = 100
    commit_interval_ms: int = 200
    revoke_grace_ms: int = 5000
    retry_backoff_ms: int = 500
    drain_timeout_ms: int = 30000
    #: An output or dead-letter topic missing this long stops the worker (a topic-level error).
    missing_topic_timeout_ms: int = 60000
    client: Mapping[str, Any] = field(default_factory=dict)
    consumer: Mapping[str, Any] = field(default_factory=dict)
    producer: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exactly_once(self) -> bool:
        return self.delivery == "exactly-once"

    @property
    def transactional_id(self) -> str:
        """Stable across restarts, so a restarted worker fences and aborts its predecessor's transaction."""
        return f"{self.group_id}.{self.instance_id}"

    def route_for(self, topic: str) -> Route | None:
        return next((r for r in self.routes if r.input == topic), None)

    def consumer_settings(self) -> dict[str, Any]:
        """Return librdkafka consumer settings (secrets included: never log these, log `redact()`)."""
        settings: dict[str, Any] = {
            "auto.offset.reset": "earliest",
            # librdkafka's 500 ms long-poll shows up as latency on brokers that hold fetches.
            "fetch.wait.max.ms": 50,
            **self.client,
            **self.consumer,
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
        if self.exactly_once:
            settings["isolation.level"] = "read_committed"
        return settings

    def producer_settings(self) -> dict[str, Any]:
        """Return librdkafka producer settings (idempotent; transactional in exactly-once mode)."""
        settings: dict[str, Any] = {
            "linger.ms": 5,
            **self.client,
            **self.producer,
            "bootstrap.servers": self.bootstrap_servers,
            # Idempotence keeps per-partition order and drops retry duplicates.
            "enable.idempotence": True,
        }
        if self.exactly_once:
            settings["transactional.id"] = self.transactional_id
            settings.setdefault("transaction.timeout.ms", 30000)
        return settings


def _str(table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str | None:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"[{where}] {key} must be a non-empty string")
    return value


def _positive_int(table: Mapping[str, Any], key: str, where: str, default: int | None) -> int | None:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"[{where}] {key} must be a positive integer")
    return value


def _choice(table: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...]) -> str:
    value = table.get(key, choices[0])
    if value not in choices:
        raise ConfigError(f"[{where}] {key} must be one of {', '.join(choices)} (got {value!r})")
    return str(value)


def _settings(table: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{where}.{key}] must be a table of librdkafka settings")
    reserved = sorted(set(value) & set(RESERVED_CLIENT_KEYS))
    if reserved:
        raise ConfigError(f"[{where}.{key}] {', '.join(reserved)} is managed by the worker (see delivery)")
    return dict(value)


ROUTE_KEYS = (set(Route.__dataclass_fields__) - {"label_tree"}) | set(LONG_TEXT_KEYS)
KAFKA_KEYS = set(KafkaConfig.__dataclass_fields__)


def parse_route(table: Any, index: int, label_sets: Mapping[str, Any]) -> Route:
    """Validate one [[kafka.routes]] entry."""
    where = f"kafka.routes[{index}]"
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    unknown = set(table) - ROUTE_KEYS
    if unknown:
        raise ConfigError(f"[{where}] unknown key(s): {', '.join(sorted(unknown))}")
    input_topic = _str(table, "input", where)
    output = _str(table, "output", where)
    if input_topic is None or output is None:
        raise ConfigError(f"[{where}] needs input and output topics")
    label_set = _str(table, "label_set", where)
    if label_set is not None and label_set not in label_sets:
        raise ConfigError(f"[{where}] label_set {label_set!r} is not defined in [label_sets]")
    separator = _str(table, "label_separator", where, ".") or "."
    labels = table.get("labels")
    label_tree = None
    if isinstance(labels, Mapping):
        try:
            label_tree = tree_from_labels(labels, separator)
        except InvalidInput as exc:
            raise ConfigError(f"[{where}] labels: {exc.bare_message}") from exc
        labels = list(flatten(label_tree))
    if labels is not None:
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise ConfigError(f"[{where}] labels must be a non-empty list of non-empty strings")
        labels = tuple(labels)
    threshold = table.get("threshold")
    if threshold is not None and (
        not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0 <= threshold <= 1
    ):
        raise ConfigError(f"[{where}] threshold must be a number in [0, 1]")
    multi_label = table.get("multi_label")
    if multi_label is not None and not isinstance(multi_label, bool):
        raise ConfigError(f"[{where}] multi_label must be true or false")
    dlq = _str(table, "dlq", where, f"{input_topic}.dlq")
    assert dlq is not None
    if len({input_topic, output, dlq}) != 3:
        raise ConfigError(f"[{where}] input, output and dlq must be three different topics")
    return Route(
        input=input_topic,
        output=output,
        dlq=dlq,
        label_set=label_set,
        labels=labels,
        threshold=None if threshold is None else float(threshold),
        multi_label=multi_label,
        top_k=_positive_int(table, "top_k", where, None),
        max_text_chars=_positive_int(table, "max_text_chars", where, None),
        over_length=_choice(table, "over_length", where, OVER_LENGTH),
        partitioning=_choice(table, "partitioning", where, PARTITIONING),
        long_text=parse_long_text(table, where) if any(k in table for k in LONG_TEXT_KEYS) else None,
        return_hierarchical=_bool(table, "return_hierarchical", where),
        label_separator=separator,
        label_tree=label_tree,
        **_session_options(table, where),
    )


def _session_options(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The route's session keys (`session`, `strategy`, `emit`, look-back bounds), validated."""
    session = table.get("session")
    if session is None:
        given = sorted(k for k in SESSION_KEYS if k in table)
        if given:
            raise ConfigError(f'[{where}] {", ".join(given)} need(s) session = "key"')
        return {}
    if session not in SESSION_SOURCES:
        raise ConfigError(f"[{where}] session must be one of {', '.join(SESSION_SOURCES)} (got {session!r})")
    strategy = None
    if "strategy" in table:
        spec = table["strategy"]
        if not isinstance(spec, str):
            raise ConfigError(f'[{where}] strategy must be a string such as "every_n_tokens:200"')
        try:
            strategy = parse_strategy(spec)
        except InvalidInput as exc:
            raise ConfigError(f"[{where}] strategy: {exc.bare_message}") from exc
    return {
        "session": session,
        "strategy": strategy,
        "emit": _choice(table, "emit", where, EMIT),
        "session_lookback": _positive_int(table, "session_lookback", where, DEFAULT_LOOKBACK),
        "session_lookback_chars": _positive_int(
            table, "session_lookback_chars", where, DEFAULT_LOOKBACK_CHARS
        ),
    }


def _bool(table: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = table.get(key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"[{where}] {key} must be true or false")
    return value


def parse_kafka_config(app_config: AppConfig) -> KafkaConfig:
    """Validate the [kafka] section of `app_config` (label-set names checked against [label_sets])."""
    table = app_config.section("kafka")
    if not table:
        raise ConfigError("[kafka] section is missing: the worker needs bootstrap_servers and routes")
    unknown = set(table) - KAFKA_KEYS
    if unknown:
        raise ConfigError(f"[kafka] unknown key(s): {', '.join(sorted(unknown))}")
    bootstrap = _str(table, "bootstrap_servers", "kafka")
    if bootstrap is None:
        raise ConfigError("[kafka] bootstrap_servers is required")
    raw_routes = table.get("routes", [])
    if not isinstance(raw_routes, list) or not raw_routes:
        raise ConfigError("[kafka] needs at least one [[kafka.routes]] entry")
    routes = tuple(parse_route(r, i, app_config.label_sets) for i, r in enumerate(raw_routes))
    inputs = [r.input for r in routes]
    if len(set(inputs)) != len(inputs):
        raise ConfigError("[kafka.routes] an input topic appears in more than one route")
    produced = {r.output for r in routes} | {r.dlq for r in routes}
    if produced & set(inputs):
        raise ConfigError("[kafka.routes] an output or dlq topic is also an input topic (a loop)")
    ints = {
        key: _positive_int(table, key, "kafka", KafkaConfig.__dataclass_fields__[key].default)  # type: ignore[arg-type]
        for key in (
            "batch_size",
            "max_in_flight",
            "poll_timeout_ms",
            "commit_interval_ms",
            "revoke_grace_ms",
            "retry_backoff_ms",
            "drain_timeout_ms",
            "missing_topic_timeout_ms",
        )
    }
    instance_id = _str(table, "instance_id", "kafka") or socket.gethostname()
    return KafkaConfig(
        bootstrap_servers=bootstrap,
        routes=routes,
        group_id=_str(table, "group_id", "kafka", "gliclass") or "gliclass",
        delivery=_choice(table, "delivery", "kafka", DELIVERY_MODES),
        instance_id=instance_id,
        client=_settings(table, "client", "kafka"),
        consumer=_settings(table, "consumer", "kafka"),
        producer=_settings(table, "producer", "kafka"),
        **ints,  # type: ignore[arg-type]
    )
