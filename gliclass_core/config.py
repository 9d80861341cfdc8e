"""Configuration: one TOML file, every key overridable by GLICLASS_* environment variables.

Loaded once at start-up into frozen dataclasses; nothing here is read at import time.

Environment overrides use `__` between levels: `GLICLASS_BATCHING__MAX_BATCH_SIZE=32`,
`GLICLASS_MODEL__DEVICE=cpu`. Under `kafka.client`, `kafka.consumer` and `kafka.producer`
(librdkafka settings) single underscores become dots: `GLICLASS_KAFKA__CLIENT__SASL_PASSWORD=...`
sets `sasl.password`. Values are parsed as TOML literals when they parse (numbers, booleans,
arrays), else taken as strings; values for librdkafka (those three tables) and for secret-named keys
are always taken as strings, so a password `1_000` or `true` arrives exactly as written.

Each edge parses its own section (`grpc`, `kafka`) from `AppConfig.raw`; the core owns
`model`, `batching` and `label_sets`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gliclass_core.devices import engine_problem
from gliclass_core.errors import ConfigError, InvalidInput
from gliclass_core.types import TRUNCATE, LabelNode, LongText

ENV_PREFIX = "GLICLASS_"
#: A key is secret-named when one of its words (split at `.`, `_`, `-`) ends with one of these
#: (`tokens` is left out on purpose: `max_batch_tokens` is a count).
SECRET_MARKERS = (
    *("password", "passwords", "passwd", "secret", "secrets", "token"),
    *("key", "keys", "credential", "credentials"),
)
#: Secret-bearing librdkafka settings whose names carry no marker word.
SECRET_KEYS = frozenset({"sasl.oauthbearer.config", "sasl.oauthbearer.extensions", "sasl.jaas.config"})
#: Tables passed to librdkafka, which parses its own values from strings.
_LIBRDKAFKA_TABLES = frozenset({"client", "consumer", "producer"})
_WORD = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class ModelConfig:
    id: str = "builtin:minilm"
    device: str = "auto"
    replicas_per_device: int = 1
    dtype: str | None = None  # None: fp32 on CPU, bf16 on CUDA where supported; "int8" with engine onnx
    engine: str = "torch"  # "onnx": encoders in ONNX Runtime on CPU (extra gliclass-stream[onnx])
    cpu_threads: int | None = None
    max_length: int | None = None


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 64
    max_batch_tokens: int = 16384
    max_wait_ms: float = 5.0
    max_queue: int = 10000
    #: Bulk (Kafka) items may fill at most this share of `max_queue`; the rest is kept for
    #: interactive (gRPC, HTTP) calls, so a Kafka backlog never locks them out.
    bulk_queue_share: float = 0.8


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: tuple[str, ...]
    threshold: float = 0.5
    multi_label: bool = True
    top_k: int | None = None
    prompt: str | None = None
    # `labels = {group = [...], ...}` (a nested table): the tree; `labels` holds its flattened names.
    label_tree: tuple[LabelNode, ...] | None = None
    label_separator: str = "."
    return_hierarchical: bool = False
    long_text: LongText = TRUNCATE


@dataclass(frozen=True)
class AppConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    label_sets: Mapping[str, LabelSet] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        """Return a raw top-level section (e.g. 'grpc', 'kafka'), empty if absent."""
        value = self.raw.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"[{name}] must be a table")
        return value


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> AppConfig:
    """Read the TOML file (if any), apply GLICLASS_* overrides from `env`, validate, freeze."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {p}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
    apply_env_overrides(data, os.environ if env is None else env)
    return parse_config(data)


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> None:
    """Set `data[a][b]... = value` for every GLICLASS_A__B=value in env (in place)."""
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        verbatim = len(parts) >= 3 and parts[0] == "kafka" and parts[1] in _LIBRDKAFKA_TABLES
        if verbatim:
            parts = [*parts[:2], ".".join(parts[2:]).replace("_", ".")]
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: '{part}' is not a table")
            node = child
        node[parts[-1]] = value if verbatim or is_secret_key(parts[-1]) else _parse_literal(value)


def is_secret_key(key: str) -> bool:
    """True for keys that hold secrets (`sasl.password`, `ssl.key.pem`, `api_key`, `sasl.jaas.config`)."""
    lowered = key.lower()
    if lowered in SECRET_KEYS:
        return True
    return any(word.endswith(SECRET_MARKERS) for word in _WORD.split(lowered) if word)


def _parse_literal(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _build(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    known = {f.name for f in fields(cls)}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"[{where}] unknown key(s): {', '.join(sorted(unknown))}")
    try:
        return cls(**table)
    except TypeError as exc:
        raise ConfigError(f"[{where}] {exc}") from exc


def parse_config(data: Mapping[str, Any]) -> AppConfig:
    """Validate a config mapping (as read from TOML) into an AppConfig."""
    model = _build(ModelConfig, data.get("model", {}), "model")
    batching = _build(BatchingConfig, data.get("batching", {}), "batching")
    for key in ("max_batch_size", "max_batch_tokens", "max_queue"):
        if not isinstance(getattr(batching, key), int) or getattr(batching, key) < 1:
            raise ConfigError(f"[batching] {key} must be a positive integer")
    if not isinstance(batching.max_wait_ms, int | float) or batching.max_wait_ms < 0:
        raise ConfigError("[batching] max_wait_ms must be >= 0")
    share = batching.bulk_queue_share
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ConfigError("[batching] bulk_queue_share must be a number in (0, 1]")
    if not isinstance(model.replicas_per_device, int) or model.replicas_per_device < 1:
        raise ConfigError("[model] replicas_per_device must be a positive integer")
    _check_engine(model)
    label_sets: dict[str, LabelSet] = {}
    raw_sets = data.get("label_sets", {})
    if not isinstance(raw_sets, Mapping):
        raise ConfigError("[label_sets] must be a table of tables")
    for name, table in raw_sets.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"[label_sets.{name}] must be a table")
        table, extra = _label_set_options(name, table)
        labels = extra.get("labels", table.get("labels"))
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise ConfigError(f"[label_sets.{name}] labels must be a non-empty list of non-empty strings")
        if len(set(labels)) != len(labels):
            raise ConfigError(f"[label_sets.{name}] labels contain duplicates")
        label_sets[name] = _build(
            LabelSet, {**table, **extra, "name": name, "labels": tuple(labels)}, f"label_sets.{name}"
        )
        threshold = label_sets[name].threshold
        if not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"[label_sets.{name}] threshold must be a number in [0, 1]")
    return AppConfig(model=model, batching=batching, label_sets=label_sets, raw=dict(data))


LONG_TEXT_KEYS = ("long_text", "text_chunk_size", "text_chunk_overlap", "labels_chunk_size")


def parse_long_text(table: Mapping[str, Any], where: str, base: LongText = TRUNCATE) -> LongText:
    """Read `long_text = "truncate" | "chunk"` and the chunk sizes of a config table."""
    from gliclass_core.processing.long_text import long_text_options

    try:
        return long_text_options(
            table.get("long_text"),
            table.get("text_chunk_size"),
            table.get("text_chunk_overlap"),
            table.get("labels_chunk_size"),
            base=base,
        )
    except InvalidInput as exc:
        raise ConfigError(f"[{where}] {exc.field or 'long_text'}: {exc.bare_message}") from exc


def _label_set_options(name: str, table: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a label-set table into plain keys and the parsed long-text / hierarchical settings."""
    from gliclass_core.processing.hierarchy import flatten, tree_from_labels

    where = f"label_sets.{name}"
    if "label_tree" in table:  # derived from a nested `labels` table, never set directly
        raise ConfigError(f"[{where}] unknown key(s): label_tree")
    plain = {k: v for k, v in table.items() if k not in LONG_TEXT_KEYS}
    extra: dict[str, Any] = {"long_text": parse_long_text(table, where)}
    separator = plain.get("label_separator", ".")
    if not isinstance(separator, str) or not separator:
        raise ConfigError(f"[{where}] label_separator must be a non-empty string")
    hierarchical = plain.get("return_hierarchical", False)
    if not isinstance(hierarchical, bool):
        raise ConfigError(f"[{where}] return_hierarchical must be true or false")
    labels = plain.get("labels")
    if isinstance(labels, Mapping):
        try:
            tree = tree_from_labels(labels, separator)
        except InvalidInput as exc:
            raise ConfigError(f"[{where}] labels: {exc.bare_message}") from exc
        extra.update(label_tree=tree, labels=list(flatten(tree)))
    return plain, extra


def _check_engine(model: ModelConfig) -> None:
    problem = engine_problem(model.engine, model.dtype, model.device)
    if problem is not None:
        raise ConfigError(f"[model] {problem[1]}")


def redact(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Copy a settings mapping for logs: every value under a secret-named key becomes `***`.

    Recurses into nested tables and lists (a secret-named key hides its whole value, table or not).
    """
    return {
        key: "***" if is_secret_key(str(key)) else _redact_value(value) for key, value in settings.items()
    }


def _redact_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    return value
