from __future__ import annotations

from pathlib import Path

import pytest

from gliclass_core.config import ConfigError, load_config, redact

EXAMPLE = """
[model]
id = "builtin:minilm"
device = "cpu"

[batching]
max_batch_size = 16

[label_sets.support]
labels = ["billing", "bug report", "feature request"]
threshold = 0.4

[kafka]
bootstrap_servers = "localhost:9092"

[kafka.client]
"sasl.password" = "hunter2"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gliclass.toml"
    path.write_text(text)
    return path


def test_file_values_and_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, EXAMPLE), env={})
    assert cfg.model.device == "cpu"
    assert cfg.batching.max_batch_size == 16
    assert cfg.batching.max_batch_tokens == 16384  # default kept
    assert cfg.label_sets["support"].labels == ("billing", "bug report", "feature request")
    assert cfg.label_sets["support"].threshold == 0.4
    assert cfg.section("kafka")["bootstrap_servers"] == "localhost:9092"
    assert cfg.section("grpc") == {}


def test_env_overrides_nest_and_parse_literals(tmp_path: Path) -> None:
    env = {
        "GLICLASS_BATCHING__MAX_BATCH_SIZE": "32",
        "GLICLASS_MODEL__DEVICE": "cuda:0",
        "GLICLASS_KAFKA__CLIENT__SASL_USERNAME": "svc",
        "GLICLASS_GRPC__ADDRESS": "127.0.0.1:0",
        "OTHER": "ignored",
    }
    cfg = load_config(write(tmp_path, EXAMPLE), env=env)
    assert cfg.batching.max_batch_size == 32
    assert cfg.model.device == "cuda:0"
    assert cfg.section("kafka")["client"]["sasl.username"] == "svc"
    assert cfg.section("kafka")["client"]["sasl.password"] == "hunter2"
    assert cfg.section("grpc")["address"] == "127.0.0.1:0"


def test_no_file_gives_defaults() -> None:
    cfg = load_config(None, env={})
    assert cfg.model.id == "builtin:minilm"
    assert cfg.label_sets == {}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[batching]\nmax_batch_size = 0\n", "max_batch_size"),
        ("[batching]\nmax_batch_sise = 3\n", "max_batch_sise"),
        ("[label_sets.x]\nlabels = []\n", "label_sets.x"),
        ('[label_sets.x]\nlabels = ["a", "a"]\n', "duplicates"),
        ('[label_sets.x]\nlabels = ["a"]\nthreshold = 2\n', "threshold"),
        ("[model\n", "not valid TOML"),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(write(tmp_path, text), env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_redact_hides_secrets_only() -> None:
    out = redact({"client": {"sasl.password": "hunter2", "sasl.username": "svc"}, "ssl.key.location": "/k"})
    assert out["client"]["sasl.password"] == "***"
    assert out["client"]["sasl.username"] == "svc"
    assert out["ssl.key.location"] == "***"


def test_env_values_for_librdkafka_and_secrets_stay_strings(tmp_path: Path) -> None:
    env = {
        "GLICLASS_KAFKA__CLIENT__SASL_PASSWORD": "1_000",
        "GLICLASS_KAFKA__CLIENT__ENABLE_SSL_CERTIFICATE_VERIFICATION": "true",
        "GLICLASS_KAFKA__PRODUCER__LINGER_MS": "10",
        "GLICLASS_GRPC__TLS__KEY_PASSWORD": "0x1F",
        "GLICLASS_TELEMETRY__API_TOKEN": "[1, 2]",
        "GLICLASS_BATCHING__MAX_BATCH_TOKENS": "4096",  # "tokens" is a count, not a token: parsed
        "GLICLASS_LABEL_SETS__SUPPORT__MULTI_LABEL": "false",
    }
    cfg = load_config(write(tmp_path, EXAMPLE), env=env)
    client = cfg.section("kafka")["client"]
    assert client["sasl.password"] == "1_000"
    assert client["enable.ssl.certificate.verification"] == "true"
    assert cfg.section("kafka")["producer"]["linger.ms"] == "10"
    assert cfg.section("grpc")["tls"]["key_password"] == "0x1F"
    assert cfg.section("telemetry")["api_token"] == "[1, 2]"
    assert cfg.batching.max_batch_tokens == 4096
    assert cfg.label_sets["support"].multi_label is False


def test_redact_recurses_into_tables_and_lists() -> None:
    settings = {
        "bootstrap.servers": "b:9092",
        "sasl.oauthbearer.config": "principal=svc clientSecret=oauth-s3cret",
        "ssl.key.password": "pem-pass",
        "ssl.key.pem": "-----BEGIN PRIVATE KEY-----",
        "kafka": {
            "client": {"sasl.password": "hunter2", "sasl.jaas.config": "jaas-s3cret"},
            "routes": [{"input": "a", "api_key": "route-key"}, [{"access_token": "deep-token"}]],
        },
        "secrets": {"nested": "whole-table"},
        "max_batch_tokens": 4096,
    }
    out = redact(settings)
    text = repr(out)
    secrets = ("oauth-s3cret", "pem-pass", "PRIVATE KEY", "hunter2", "jaas-s3cret", "route-key", "deep-token")
    for secret in (*secrets, "whole-table"):
        assert secret not in text
    assert out["kafka"]["routes"][0] == {"input": "a", "api_key": "***"}
    assert out["bootstrap.servers"] == "b:9092" and out["max_batch_tokens"] == 4096
    assert settings["kafka"]["client"]["sasl.password"] == "hunter2"  # the input is not changed
