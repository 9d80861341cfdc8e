"""`serve`'s SIGHUP reload with a Kafka worker: validate everything first, then apply to gRPC and the worker.

Real objects, nothing started: a Runtime that loads nothing, a GrpcServer that is not bound, and a
KafkaWorker whose thread is not running (its `reload` validates and applies directly).
"""

from __future__ import annotations

from pathlib import Path

from gliclass_core.config import load_config
from gliclass_core.runtime import Runtime
from server.app.process import reload
from server.grpc.config import parse_grpc_config
from server.grpc.server import GrpcServer
from worker.app import KafkaWorker

BASE = """
[model]
id = "builtin:minilm"
device = "cpu"

[label_sets.support]
labels = ["billing", "bug report", "feature request"]
{extra}
[kafka]
bootstrap_servers = "127.0.0.1:9"
group_id = "reload-test"

[[kafka.routes]]
input = "in"
output = "out"
label_set = "{route_set}"
"""


def test_reload_applies_label_sets_to_grpc_and_worker_only_when_all_of_it_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "gliclass.toml"
    path.write_text(BASE.format(extra="", route_set="support"), encoding="utf-8")
    running = load_config(str(path))
    server = GrpcServer(Runtime.from_config(running), parse_grpc_config(running.section("grpc")))
    worker = KafkaWorker(Runtime.from_config(running), running)
    urgency = '\n[label_sets.urgency]\nlabels = ["urgent", "not urgent"]\n'

    # The new label set is fine for gRPC, but the Kafka route names a set that does not exist:
    # nothing changes anywhere, not even the part that was valid.
    path.write_text(BASE.format(extra=urgency, route_set="nope"), encoding="utf-8")
    assert not reload(str(path), running, server, worker)
    assert sorted(server.servicer.label_sets) == ["support"]
    assert worker.config.routes[0].label_set == "support"

    path.write_text(BASE.format(extra=urgency, route_set="urgency"), encoding="utf-8")
    assert reload(str(path), running, server, worker)
    assert sorted(server.servicer.label_sets) == ["support", "urgency"]
    assert worker.config.routes[0].label_set == "urgency"
