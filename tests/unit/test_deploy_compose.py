"""docker/compose.yaml agrees with the config it mounts, the collector config and the Dockerfile."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_deploy_support import (
    DOCKER,
    compose,
    env_of,
    exec_form,
    host_port,
    interpolate,
    load,
    load_yaml,
    parse_topics,
    read_dockerfile,
    route_topics,
)

from server.grpc.config import parse_grpc_config
from worker.config import parse_kafka_config

CONFIG_TARGET = "/etc/gliclass/gliclass.toml"


def _service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"compose.yaml has no service {name}"
    return services[name]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def _bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Map container path -> host source of a service's short-syntax volumes."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        out[target] = source
    return out


def _stack_config():
    """The config the gliclass container sees: the mounted file plus the service's GLICLASS_* env."""
    service = _service("gliclass")
    source = _bind_mounts(service)[CONFIG_TARGET]
    path = (DOCKER / source).resolve()
    assert path.is_file(), f"compose mounts {source}, which does not exist"
    env = {k: v for k, v in _env(service).items() if k.startswith("GLICLASS_")}
    return load(path, env)


def _services_with_image(prefix: str) -> list[str]:
    return [name for name, s in compose()["services"].items() if str(s.get("image", "")).startswith(prefix)]


def test_stack_has_kafka_init_app_collector_and_jaeger_with_official_images() -> None:
    services = compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka-init"]["image"] == services["kafka"]["image"]
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert services["jaeger"]["image"].startswith("jaegertracing/")
    for name, service in services.items():
        image = str(service.get("image", ""))
        assert ":latest" not in image and "zookeeper" not in image, f"{name}: pin a tag, no ZooKeeper"


def test_kafka_runs_in_kraft_mode_with_consistent_listeners() -> None:
    env = _env(_service("kafka"))
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for k in env)
    # Kafka formats storage with CLUSTER_ID: it must be a base64url-encoded 16-byte UUID.
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    listeners = dict(x.split("://") for x in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    advertised = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    for name in (*listeners, *advertised):
        assert name in protocols, f"listener {name} has no security protocol"
    for name, address in advertised.items():
        assert host_port(listeners[name])[1] == host_port(address)[1], f"{name} advertises another port"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners and controller not in advertised
    node, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == env["KAFKA_NODE_ID"]
    assert host_port(voter)[1] == host_port(listeners[controller])[1]
    assert compose()["volumes"].keys() >= {_bind_mounts(_service("kafka"))[env["KAFKA_LOG_DIRS"]]}
    # Exactly-once needs the transaction log, which a single broker can only hold with RF 1.
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_mounted_example_config_loads_and_the_command_reads_it() -> None:
    service = _service("gliclass")
    command = service["command"]
    assert command[:1] == ["serve"] and command[command.index("--config") + 1] == CONFIG_TARGET
    assert _bind_mounts(service)[CONFIG_TARGET] == "./gliclass.toml"
    config = _stack_config()
    assert config.model.id == "builtin:minilm"
    # Both edges' own parsers accept their sections: `serve` runs gRPC and the worker in the stack.
    assert parse_grpc_config(config.section("grpc")).tls is None
    kafka = parse_kafka_config(config)
    assert {r.label_set for r in kafka.routes} <= set(config.label_sets)


def test_sasl_password_from_the_environment_reaches_the_kafka_client() -> None:
    """The README's secret pass-through: GLICLASS_KAFKA__CLIENT__SASL_PASSWORD -> sasl.password."""
    path = DOCKER / _bind_mounts(_service("gliclass"))[CONFIG_TARGET]
    env = {
        "GLICLASS_KAFKA__CLIENT__SECURITY_PROTOCOL": "SASL_SSL",
        "GLICLASS_KAFKA__CLIENT__SASL_MECHANISM": "SCRAM-SHA-512",
        "GLICLASS_KAFKA__CLIENT__SASL_USERNAME": "gliclass",
        "GLICLASS_KAFKA__CLIENT__SASL_PASSWORD": "s3cret",
    }
    kafka = parse_kafka_config(load(path, env))
    for settings in (kafka.consumer_settings(), kafka.producer_settings()):
        assert settings["security.protocol"] == "SASL_SSL"
        assert settings["sasl.mechanism"] == "SCRAM-SHA-512"
        assert (settings["sasl.username"], settings["sasl.password"]) == ("gliclass", "s3cret")
        assert settings["client.id"] == "gliclass-stream"


def test_grpc_port_published_is_the_configs_port_and_the_healthchecked_one() -> None:
    _, port = host_port(parse_grpc_config(_stack_config().section("grpc")).address)
    published = [str(p) for p in _service("gliclass")["ports"]]
    assert any(p.rsplit(":", 1)[-1] == str(port) for p in published), (published, port)
    dockerfile = read_dockerfile()
    health = exec_form(dockerfile.find("HEALTHCHECK")[-1].args)
    assert health[:2] == ["gliclass-stream", "health"]
    assert host_port(health[health.index("--address") + 1]) == ("127.0.0.1", port)


def test_bootstrap_servers_is_the_brokers_in_network_listener() -> None:
    kafka = _stack_config().section("kafka")
    advertised = dict(
        x.split("://") for x in _env(_service("kafka"))["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    inter_broker = _env(_service("kafka"))["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert kafka["bootstrap_servers"] == advertised[inter_broker]
    host, _ = host_port(kafka["bootstrap_servers"])
    assert host == "kafka" or _service("kafka").get("hostname") == host
    assert _env(_service("kafka-init"))["BOOTSTRAP"] == kafka["bootstrap_servers"]


def test_topic_init_creates_exactly_the_route_topics() -> None:
    routes = parse_kafka_config(_stack_config()).routes
    _, every = route_topics(_stack_config())
    assert every == {t for r in routes for t in (r.input, r.output, r.dlq)}
    topics = parse_topics(_env(_service("kafka-init"))["TOPICS"])
    assert set(topics) == every
    assert all(spec[0] >= 1 for spec in topics.values())
    assert _env(_service("kafka"))["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_topic_init_script_creates_each_topic_with_its_partitions(tmp_path: Path) -> None:
    """Run the init service's real script with bash, as the container would after compose's `$$` unescaping.

    A stub stands in for kafka-topics.sh (no JVM or Kafka distribution on this machine); it records
    its arguments so the test sees the exact calls the script makes.
    """
    service = _service("kafka-init")
    entrypoint, command = service["entrypoint"], service["command"]
    assert entrypoint[0] == "/bin/bash"
    script = interpolate(command[0])
    record = tmp_path / "calls.txt"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    script = script.replace("/opt/kafka/bin/kafka-topics.sh", str(stub))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **_env(service)}
    subprocess.run(["bash", *entrypoint[1:], script], env=env, check=True, timeout=30)
    created = {}
    for line in record.read_text().splitlines():
        args = line.split()
        if "--create" in args:
            assert args[args.index("--bootstrap-server") + 1] == env["BOOTSTRAP"]
            created[args[args.index("--topic") + 1]] = int(args[args.index("--partitions") + 1])
    assert created == {name: spec[0] for name, spec in parse_topics(env["TOPICS"]).items()}


def test_start_order_waits_for_a_healthy_broker_and_created_topics() -> None:
    assert _service("kafka")["healthcheck"]["test"]
    assert _service("kafka-init")["depends_on"]["kafka"]["condition"] == "service_healthy"
    depends = _service("gliclass")["depends_on"]
    assert depends["kafka-init"]["condition"] == "service_completed_successfully"
    assert "otel-collector" in depends


def test_otel_env_points_at_the_collector_and_the_collector_exports_to_jaeger() -> None:
    env = _env(_service("gliclass"))
    assert env["OTEL_SERVICE_NAME"]
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    host, port = host_port(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert host in _services_with_image("otel/opentelemetry-collector")
    collector = _service(host)
    mount = _bind_mounts(collector)
    config_arg = next(a for a in collector["command"] if a.startswith("--config="))
    source = mount[config_arg.removeprefix("--config=")]
    config = load_yaml((DOCKER / source).resolve())
    protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    protocol = "http" if protocol.startswith("http") else "grpc"
    receiver = config["receivers"]["otlp"]["protocols"][protocol]
    assert host_port(receiver["endpoint"])[1] == port
    pipelines = config["service"]["pipelines"]
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"pipeline {name} uses undefined {kind} {component}"
    assert "otlp" in pipelines["traces"]["receivers"] and "metrics" in pipelines
    trace_exporters = [config["exporters"][e] for e in pipelines["traces"]["exporters"]]
    jaeger_hosts = {host_port(e["endpoint"])[0] for e in trace_exporters if "endpoint" in e}
    assert jaeger_hosts & set(_services_with_image("jaegertracing/"))


@pytest.mark.parametrize("name", ["gliclass", "worker"])
def test_otel_env_turns_on_traces_and_metrics_over_otlp_grpc(name: str) -> None:
    """The app's own reading of the OTEL_* variables (telemetry is off unless they ask for it)."""
    from gliclass_core.telemetry.setup import settings_from_env

    settings = settings_from_env(_env(_service(name)))
    assert settings.traces == ("otlp",) and settings.metrics == ("otlp",)
    assert settings.protocol("traces") == settings.protocol("metrics") == "grpc"
    assert settings.logs == (), "logs go to stdout for `docker compose logs`"


def test_model_cache_volume_is_the_images_cache_dir() -> None:
    dockerfile = read_dockerfile()
    volumes = [v for inst in dockerfile.find("VOLUME") for v in exec_form(inst.args)]
    cache_env = env_of(dockerfile.find("ENV", "runtime"))
    mounts = _bind_mounts(_service("gliclass"))
    named = [target for target, source in mounts.items() if not source.startswith((".", "/"))]
    assert named and set(named) <= set(volumes)
    assert cache_env["GLICLASS_CACHE"] in named
    assert all(mounts[t] in compose()["volumes"] for t in named)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_image_build_points_at_the_dockerfile_and_a_variant_it_has(variant: str) -> None:
    build = _service("gliclass")["build"]
    context = (DOCKER / build["context"]).resolve()
    assert (context / build["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()
    chosen = interpolate(build["args"]["VARIANT"], {"GLICLASS_VARIANT": variant} if variant != "cpu" else {})
    assert chosen == variant
    assert f"runtime-{chosen}" in read_dockerfile().stages


def test_scale_out_workers_share_the_config_group_and_telemetry_of_the_app() -> None:
    app, worker = _service("gliclass"), _service("worker")
    assert worker["image"] == app["image"] and worker["profiles"] == ["workers"]
    command = worker["command"]
    assert command[0] == "worker" and command[command.index("--config") + 1] == CONFIG_TARGET
    assert _bind_mounts(worker) == _bind_mounts(app)
    assert "ports" not in worker, "workers publish nothing, so --scale cannot clash on a host port"
    assert worker["depends_on"]["gliclass"]["condition"] == "service_healthy"
    telemetry = {k: v for k, v in _env(app).items() if k.startswith("OTEL_") and k != "OTEL_SERVICE_NAME"}
    assert telemetry.items() <= _env(worker).items()
