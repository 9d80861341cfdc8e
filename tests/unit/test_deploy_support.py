"""Helpers for the deployment tests: read docker/ files the way Docker and compose read them.

No tests here; test_deploy_compose.py, test_deploy_dockerfile.py and test_deploy_k8s.py import it.
There is no Docker engine on the machines that run these tests, so they check what an engine would
read: the files themselves, the configs they mount, and the commands they run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gliclass_core.config import AppConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: str


@dataclass
class Dockerfile:
    """A Dockerfile as a list of instructions, each tagged with the stage it belongs to."""

    instructions: list[Instruction] = field(default_factory=list)
    global_args: dict[str, str] = field(default_factory=dict)

    def stage(self, name: str) -> list[Instruction]:
        return [i for i in self.instructions if i.stage == name]

    def find(self, keyword: str, stage: str | None = None) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword and (stage is None or i.stage == stage)]

    @property
    def stages(self) -> list[str]:
        return [i.stage for i in self.instructions if i.keyword == "FROM"]


def read_dockerfile(path: Path = DOCKER / "Dockerfile") -> Dockerfile:
    """Split into instructions (comments dropped, `\\` continuations joined) with stage names."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    out = Dockerfile()
    stage = ""
    for n, text in enumerate(logical):
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\s+AS\s+(\S+)\s*$", args, flags=re.IGNORECASE)
            stage = match.group(1) if match else f"<final:{n}>"
        elif keyword == "ARG" and not stage:
            name, _, default = args.strip().partition("=")
            out.global_args[name] = default
        out.instructions.append(Instruction(keyword, args.strip(), stage))
    return out


def exec_form(args: str) -> list[str]:
    """Parse a JSON-array (exec form) argument list, as Docker does for CMD/ENTRYPOINT/HEALTHCHECK."""
    import json

    start = args.index("[")
    value = json.loads(args[start:])
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), args
    return value


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    """Collect `ENV a=b c=d` pairs of some instructions (later ones win)."""
    env: dict[str, str] = {}
    for inst in instructions:
        if inst.keyword == "ENV":
            for token in shlex.split(inst.args):
                name, sep, value = token.partition("=")
                if sep:
                    env[name] = value
    return env


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def compose() -> dict[str, Any]:
    data = load_yaml(DOCKER / "compose.yaml")
    assert isinstance(data, dict)
    return data


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """Resolve compose's `${VAR:-default}` the way `docker compose` would with `env`, and `$$` -> `$`."""
    env = env or {}
    placeholder = "\0"
    value = value.replace("$$", placeholder)
    value = _INTERPOLATION.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    assert "$" not in value, f"unresolved compose interpolation in {value!r}"
    return value.replace(placeholder, "$")


def host_port(value: str) -> tuple[str, int]:
    """Split 'host:port' or 'scheme://host:port' into (host, port)."""
    value = value.split("://", 1)[-1].rstrip("/")
    host, _, port = value.rpartition(":")
    return host, int(port)


def parse_topics(spec: str) -> dict[str, list[int]]:
    """Parse a TOPICS value 'name:partitions[:replicas] ...' into {name: [partitions, replicas?]}."""
    out: dict[str, list[int]] = {}
    for item in spec.split():
        name, *numbers = item.split(":")
        assert name not in out, f"topic {name} listed twice"
        out[name] = [int(x) for x in numbers]
    return out


def route_topics(config: AppConfig) -> tuple[set[str], set[str]]:
    """Return (input topics, every topic) named by the [[kafka.routes]] of a config."""
    routes = config.section("kafka").get("routes", [])
    inputs = {r["input"] for r in routes}
    every = set(inputs)
    for r in routes:
        every.update(t for t in (r.get("output"), r.get("dlq")) if t)
    return inputs, every


def load(path: Path, env: Mapping[str, str] | None = None) -> AppConfig:
    """Load a config the way the container does: only the given env applies (not this machine's)."""
    return load_config(path, env=dict(env or {}))


def cli_command() -> list[str]:
    """The `gliclass-stream` console script of this environment (the image's ENTRYPOINT)."""
    script = Path(sys.executable).with_name("gliclass-stream")
    if script.exists():
        return [str(script)]
    found = shutil.which("gliclass-stream")
    return [found] if found else [sys.executable, "-m", "server.app.cli"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLICLASS_")}
    return subprocess.run(
        [*cli_command(), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )
