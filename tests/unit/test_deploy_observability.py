"""docker/prometheus, docker/grafana, [http] in compose and Kubernetes, KEDA: agree with each other,
with the configs and with docs/operations/observability.md; the alert rules pass promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_deploy_support import DOCKER, ROOT, compose, host_port, load, load_yaml, load_yaml_all

from server.http.config import parse_http_config

PROMETHEUS = DOCKER / "prometheus"
GRAFANA = DOCKER / "grafana"
K8S = DOCKER / "k8s"
DOCS = ROOT / "docs" / "operations" / "observability.md"
DASHBOARD = GRAFANA / "dashboards" / "gliclass.json"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not found: apt-get install -y prometheus (Debian's package ships promtool)")
    return found


def documented_series() -> set[str]:
    text = DOCS.read_text()
    table = text[text.index("## Metrics") : text.index("## Alerts")]
    return {
        re.findall(r"`([a-z_]+)`", line.split("|")[2])[0]
        for line in table.splitlines()
        if line.startswith("| `")
    }


def documented_alerts() -> dict[str, tuple[str, str]]:
    """Alert name -> (for, severity) from the docs' alerts table."""
    text = DOCS.read_text()
    table = text[text.index("## Alerts") :].split("\n\n")[2]
    out = {}
    for line in table.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.split("|")]
            out[cells[1].strip("`")] = (cells[3], cells[4])
    return out


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROMETHEUS / "alerts.yaml")["groups"] for rule in group["rules"]]


def series_in(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (label matchers, groupings and strings removed)."""
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", bare)
    functions = {"histogram_quantile", "label_replace"}
    return {w for w in re.findall(r"\b[a-z_][a-z0-9_]*\b", bare) if "_" in w and w not in functions}


def base_series(name: str) -> str:
    """A histogram's series name for its `_bucket` / `_count` / `_sum` (documented names stay)."""
    if name in documented_series():
        return name
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_rules_pass_promtool_check_and_their_unit_tests() -> None:
    tool = promtool()
    check = subprocess.run(
        [tool, "check", "rules", "alerts.yaml"], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules())} rules found" in check.stdout
    tested = subprocess.run(
        [tool, "test", "rules", "alerts_test.yaml"], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tests = load_yaml(PROMETHEUS / "alerts_test.yaml")["tests"]
    fired = {
        case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")
    }
    silent = {
        case["alertname"] for test in tests for case in test["alert_rule_test"] if not case.get("exp_alerts")
    }
    names = {rule["alert"] for rule in rules()}
    assert fired == names
    # Those with a `for` also have a moment where they are pending, not firing.
    assert {rule["alert"] for rule in rules() if rule.get("for")} <= silent


def test_the_docs_alert_table_is_the_rules_file() -> None:
    documented = documented_alerts()
    assert {rule["alert"] for rule in rules()} == set(documented)
    for rule in rules():
        wait, severity = documented[rule["alert"]]
        assert (rule.get("for", "0"), rule["labels"]["severity"]) == (wait, severity), rule["alert"]


def test_rules_and_dashboard_read_only_documented_series() -> None:
    known = documented_series() | {"up"}
    for rule in rules():
        unknown = {base_series(s) for s in series_in(rule["expr"])} - known
        assert not unknown, f"{rule['alert']} reads undocumented series {unknown}"
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 20
    for expr in exprs:
        unknown = {base_series(s) for s in series_in(expr)} - known
        assert not unknown, f"dashboard query {expr!r} reads undocumented series {unknown}"
    read = {base_series(s) for expr in exprs for s in series_in(expr)}
    for required in ("gliclass_kafka_backlog_duration_seconds", "gliclass_predictions_top_label_share"):
        assert required in read


def test_grafana_provisions_the_dashboard_from_the_compose_prometheus() -> None:
    services = compose()["services"]
    (datasource,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for panel in dashboard["panels"] for t in panel["targets"]}
    assert uids == {datasource["uid"]}
    _, port = host_port(datasource["url"])
    assert (
        datasource["url"].startswith("http://prometheus:")
        and f"{port}:{port}" in services["prometheus"]["ports"]
    )
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "gliclass.yaml")["providers"]
    mounts = {v.split(":")[1]: (DOCKER / v.split(":")[0]).resolve() for v in services["grafana"]["volumes"]}
    assert (mounts[provider["options"]["path"]] / DASHBOARD.name).is_file()
    assert (mounts["/etc/grafana/provisioning"] / "datasources").is_dir()


def test_compose_prometheus_scrapes_the_http_port_and_loads_the_rules() -> None:
    services = compose()["services"]
    config = load(DOCKER / "gliclass.toml")
    _, http_port = host_port(parse_http_config(config.section("http")).address)
    assert f"{http_port}:{http_port}" in services["gliclass"]["ports"]
    mounts = {
        v.split(":")[1]: (DOCKER / v.split(":")[0]).resolve() for v in services["prometheus"]["volumes"]
    }
    prometheus = load_yaml(PROMETHEUS / "prometheus.yml")
    for rule_file in prometheus["rule_files"]:
        assert (mounts["/etc/prometheus"] / Path(rule_file).name).is_file()
    (job,) = prometheus["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert set(sd["names"]) == {"gliclass", "worker"} and sd["port"] == http_port
    assert job["job_name"] == "gliclass"  # GliclassNotReady reads up{job="gliclass"}
    worker_check = " ".join(services["worker"]["healthcheck"]["test"])
    assert f"127.0.0.1:{http_port}/readyz" in worker_check


@pytest.mark.parametrize("name", ["gliclass-grpc", "gliclass-worker"])
def test_kubernetes_pods_serve_http_and_are_scraped_there(name: str) -> None:
    docs = [d for f in ("grpc.yaml", "worker.yaml") for d in load_yaml_all(K8S / f)]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    config = load(K8S / container["args"][container["args"].index("--config") + 1].rsplit("/", 1)[1])
    _, http_port = host_port(parse_http_config(config.section("http")).address)
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert ports["http"] == http_port
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert (
        annotations["prometheus.io/port"] == str(http_port)
        and annotations["prometheus.io/path"] == "/metrics"
    )
    if name == "gliclass-worker":
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_keda_scales_the_worker_on_backlog_seconds() -> None:
    (scaled,) = load_yaml_all(K8S / "keda-scaledobject.yaml")
    (worker,) = [d for d in load_yaml_all(K8S / "worker.yaml") if d["kind"] == "Deployment"]
    assert scaled["kind"] == "ScaledObject" and scaled["apiVersion"].startswith("keda.sh/")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert scaled["spec"]["maxReplicaCount"] == worker["spec"]["replicas"]  # = input partitions
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert series_in(query) == {"gliclass_kafka_backlog_duration_seconds"}
    group = load(K8S / "worker.toml").section("kafka")["group_id"]
    assert f'messaging_consumer_group_name="{group}"' in query
    float(trigger["metadata"]["threshold"])
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert "keda-scaledobject.yaml" not in kustomization["resources"], "needs KEDA's CRDs: applied on its own"
