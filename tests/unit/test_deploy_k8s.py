"""docker/k8s/: manifests agree with their configs, the image and each other."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_deploy_support import (
    DOCKER,
    env_of,
    exec_form,
    host_port,
    load,
    load_yaml,
    load_yaml_all,
    parse_topics,
    read_dockerfile,
    route_topics,
)

from server.grpc.config import parse_grpc_config
from server.http.config import parse_http_config
from worker.config import parse_kafka_config

K8S = DOCKER / "k8s"


def _resources() -> list[dict[str, Any]]:
    docs = []
    for name in load_yaml(K8S / "kustomization.yaml")["resources"]:
        docs.extend(load_yaml_all(K8S / name))
    return docs


def _get(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _resources() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"want one {kind}/{name}, found {len(found)}"
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _config_of(deployment: dict[str, Any]) -> Path:
    """The ConfigMap file the container's --config points at, resolved to its source in docker/k8s/."""
    container = _container(deployment)
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == config_path.parent)
    generated = {g["name"]: g["files"] for g in load_yaml(K8S / "kustomization.yaml")["configMapGenerator"]}
    files = generated[volumes[mount["name"]]["configMap"]["name"]]
    assert config_path.name in files
    return K8S / config_path.name


def test_kustomization_lists_existing_files_and_valid_manifests() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    for name in kustomization["resources"]:
        assert (K8S / name).is_file(), name
    for generator in kustomization["configMapGenerator"]:
        for name in generator["files"]:
            assert (K8S / name).is_file(), name
    for doc in _resources():
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), f"{doc['metadata']['name']}: selector matches no pod"


def test_grpc_deployment_serves_its_config_with_readiness_on_grpc_health() -> None:
    deployment = _get("Deployment", "gliclass-grpc")
    container = _container(deployment)
    assert container["args"][0] == "serve"
    config = load(_config_of(deployment))
    assert not config.section("kafka"), "gRPC replicas must not join the worker's consumer group"
    _, port = host_port(parse_grpc_config(config.section("grpc")).address)
    _, http_port = host_port(parse_http_config(config.section("http")).address)
    assert [p["containerPort"] for p in container["ports"]] == [port, http_port]
    for probe in ("readinessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
    liveness = container["livenessProbe"]["exec"]["command"]
    health = exec_form(read_dockerfile().find("HEALTHCHECK", "runtime")[-1].args)
    assert liveness == health
    service = _get("Service", "gliclass-grpc")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (svc_port,) = service["spec"]["ports"]
    assert svc_port["targetPort"] == container["ports"][0].get("name", port)


def test_worker_replicas_match_the_input_partitions() -> None:
    deployment = _get("Deployment", "gliclass-worker")
    assert _container(deployment)["args"][0] == "worker"
    config = load(_config_of(deployment))
    kafka = parse_kafka_config(config)
    inputs, every = route_topics(config)
    job = _container(_get("Job", "gliclass-topics"))
    job_env = _env(job)
    topics = parse_topics(job_env["TOPICS"])
    assert set(topics) == every
    assert job_env["BOOTSTRAP"] == kafka.bootstrap_servers
    # Partitions are the unit of parallelism: one replica per input partition keeps every replica busy.
    assert {topics[name][0] for name in inputs} == {deployment["spec"]["replicas"]}


def test_topics_job_script_creates_each_topic_as_listed(tmp_path: Path) -> None:
    """Run the Job's real script with bash; a stub records kafka-topics.sh calls (no Kafka CLI here)."""
    job = _container(_get("Job", "gliclass-topics"))
    record = tmp_path / "calls.txt"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    script = job["args"][0].replace("/opt/kafka/bin/kafka-topics.sh", str(stub))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **_env(job)}
    subprocess.run(["bash", *job["command"][1:], script], env=env, check=True, timeout=30)
    created = {}
    for line in record.read_text().splitlines():
        args = line.split()
        created[args[args.index("--topic") + 1]] = [
            int(args[args.index("--partitions") + 1]),
            int(args[args.index("--replication-factor") + 1]),
        ]
    assert created == parse_topics(env["TOPICS"])


@pytest.mark.parametrize("name", ["gliclass-grpc", "gliclass-worker"])
def test_pods_run_as_the_images_user_with_the_cache_volume(name: str) -> None:
    dockerfile = read_dockerfile()
    deployment = _get("Deployment", name)
    uid, _, gid = [i.args for i in dockerfile.find("USER", "runtime")][-1].partition(":")
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))
    cache = env_of(dockerfile.find("ENV", "runtime"))["GLICLASS_CACHE"]
    assert cache in {m["mountPath"] for m in _container(deployment)["volumeMounts"]}


def test_worker_sasl_password_comes_from_a_secret_and_reaches_librdkafka() -> None:
    deployment = _get("Deployment", "gliclass-worker")
    ref = _env(_container(deployment))["GLICLASS_KAFKA__CLIENT__SASL_PASSWORD"]["secretKeyRef"]
    assert ref["name"] and ref["key"]
    kafka = parse_kafka_config(load(_config_of(deployment), {"GLICLASS_KAFKA__CLIENT__SASL_PASSWORD": "pw"}))
    assert kafka.consumer_settings()["sasl.password"] == "pw"
    assert "sasl.password" not in parse_kafka_config(load(_config_of(deployment))).client, "secret in a file"
