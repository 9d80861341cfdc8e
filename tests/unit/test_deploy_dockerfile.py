"""docker/Dockerfile: stages, torch pin, non-root user, proto step, cache volume, healthcheck, entrypoint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_deploy_support import (
    DOCKER,
    ROOT,
    Dockerfile,
    env_of,
    exec_form,
    host_port,
    load,
    read_dockerfile,
    run_cli,
)

from server.grpc.config import parse_grpc_config


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return read_dockerfile()


def _copy_sources(dockerfile: Dockerfile) -> list[tuple[str, str]]:
    """(source, destination) of every COPY from the build context."""
    out = []
    for inst in dockerfile.find("COPY"):
        if "--from=" in inst.args:
            continue
        *sources, dest = inst.args.split()
        out.extend((s, dest) for s in sources if not s.startswith("--"))
    return out


def test_multi_stage_with_a_cpu_default_and_a_cuda_variant(dockerfile: Dockerfile) -> None:
    assert dockerfile.global_args["VARIANT"] == "cpu"
    stages = dockerfile.stages
    assert {"builder", "runtime", "runtime-cpu", "runtime-cuda"} <= set(stages)
    final = dockerfile.find("FROM")[-1]
    assert final.args == "runtime-${VARIANT}"
    # The runtime copies only the built venv from the builder: no compilers or grpcio-tools in the image.
    copied = [i.args for i in dockerfile.find("COPY", "runtime") if "--from=" in i.args]
    assert copied == ["--from=builder /opt/venv /opt/venv"]
    cuda_env = env_of(dockerfile.stage("runtime-cuda"))
    assert cuda_env["NVIDIA_VISIBLE_DEVICES"] == "all" and "compute" in cuda_env["NVIDIA_DRIVER_CAPABILITIES"]


def test_the_image_installs_the_lock_with_torch_first(dockerfile: Dockerfile) -> None:
    """CPU torch hash-pinned from the lock, then the runtime lock by hash, then the project without deps."""
    builder = dockerfile.stage("builder")
    args = {i.args.split("=")[0]: i.args.partition("=")[2] for i in builder if i.keyword == "ARG"}
    locked = re.search(r"^torch==([\w.]+)\+cpu", (ROOT / "requirements" / "torch-cpu.txt").read_text(), re.M)
    assert locked is not None and args["TORCH_VERSION"] == locked.group(1), (
        "the CUDA torch must match the lock"
    )
    assert (
        "--extra-index-url https://download.pytorch.org/whl/cpu"
        in (ROOT / "requirements" / "torch-cpu.txt").read_text()
    )
    assert ("requirements", "./requirements") in _copy_sources(dockerfile)
    runs = [i.args for i in builder if i.keyword == "RUN"]
    torch_step = next(n for n, r in enumerate(runs) if "requirements/torch-cpu.txt" in r)
    assert (
        "cpu)  python -m pip install --require-hashes --no-deps -r requirements/torch-cpu.txt"
        in runs[torch_step]
    )
    lock_step = runs.index("python -m pip install --require-hashes -r requirements/runtime.txt")
    project_step = next(n for n, r in enumerate(runs) if re.search(r"pip install --no-deps \.( |$)", r))
    assert torch_step < lock_step < project_step
    # The runtime lock holds the same versions as the development lock, and no torch of its own.
    pins = {}
    for name in ("runtime.txt", "lock.txt"):
        text = (ROOT / "requirements" / name).read_text()
        pins[name] = dict(re.findall(r"^([A-Za-z0-9][\w.-]*)==([\w.+]+)", text, re.M))
        assert "torch" not in pins[name] and "--hash=sha256:" in text
    assert pins["runtime.txt"].items() <= pins["lock.txt"].items()


def test_copied_sources_exist_and_pass_the_dockerignore(dockerfile: Dockerfile) -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    # Deny everything first (no .venv or .git in the context), then allow what the COPYs need.
    assert next(line for line in ignore if line and not line.startswith("#")) == "**"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = _copy_sources(dockerfile)
    assert sources
    for source, _ in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the build context"
        assert source.rstrip("/") in allowed, f"COPY {source}: excluded by Dockerfile.dockerignore"


def test_runs_as_a_fixed_non_root_user(dockerfile: Dockerfile) -> None:
    runtime = dockerfile.stage("runtime")
    user = [i.args for i in runtime if i.keyword == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    useradd = next(i.args for i in runtime if i.keyword == "RUN" and "useradd" in i.args)
    assert f"--uid {uid}" in useradd and f"--gid {gid}" in useradd
    assert not [i for i in dockerfile.instructions if i.keyword == "USER" and i.stage != "runtime"]


def test_proto_code_is_generated_and_checked_in_the_build(dockerfile: Dockerfile, tmp_path: Path) -> None:
    """Run the build's proto step on a copy of the tree: it passes, and fails once the .proto changes."""
    if shutil.which("sh") is None:
        pytest.skip("needs a POSIX shell")
    step = next(i.args for i in dockerfile.find("RUN", "builder") if "proto-build.sh" in i.args)
    assert ("docker/proto-build.sh", "/usr/local/bin/proto-build.sh") in _copy_sources(dockerfile)
    assert step == "sh /usr/local/bin/proto-build.sh"
    for folder in ("protos", "server"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PROTOC_PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    script = str(DOCKER / "proto-build.sh")
    ok = subprocess.run(["sh", script, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    proto = tmp_path / "protos" / "gliclass" / "v1" / "classifier.proto"
    proto.write_text(proto.read_text() + "\nmessage DeployDriftProbe { string x = 1; }\n")
    drift = subprocess.run(
        ["sh", script, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert drift.returncode == 1 and "out of date" in drift.stderr


def test_cache_volume_and_env_agree(dockerfile: Dockerfile) -> None:
    env = env_of(dockerfile.find("ENV", "runtime"))
    volumes = [v for i in dockerfile.find("VOLUME", "runtime") for v in exec_form(i.args)]
    assert volumes == [env["GLICLASS_CACHE"]]
    for key in ("XDG_CACHE_HOME", "HF_HOME"):
        assert env[key].startswith(env["GLICLASS_CACHE"]), f"{key} outside the cache volume"
    chown = next(i.args for i in dockerfile.find("RUN", "runtime") if "chown" in i.args)
    assert env["GLICLASS_CACHE"] in chown, "the non-root user must own the cache volume"


def test_the_builtin_model_materialises_into_the_cache_volume(
    dockerfile: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gliclass_core.builtin import cache_root

    env = env_of(dockerfile.find("ENV", "runtime"))
    monkeypatch.setenv("GLICLASS_CACHE", env["GLICLASS_CACHE"])
    assert cache_root() == Path(env["GLICLASS_CACHE"])


def test_default_command_serves_the_baked_grpc_config_on_the_healthchecked_port(
    dockerfile: Dockerfile,
) -> None:
    entrypoint = exec_form(dockerfile.find("ENTRYPOINT", "runtime")[-1].args)
    command = exec_form(dockerfile.find("CMD", "runtime")[-1].args)
    assert entrypoint == ["gliclass-stream"] and command[0] == "serve"
    config_path = command[command.index("--config") + 1]
    baked = dict((dest, src) for src, dest in _copy_sources(dockerfile))[config_path]
    config = load(ROOT / baked)
    assert not config.section("kafka"), "the baked default must run without a broker"
    grpc = parse_grpc_config(config.section("grpc"))
    _, port = host_port(config.section("grpc")["address"])
    health = exec_form(dockerfile.find("HEALTHCHECK", "runtime")[-1].args)
    assert health == ["gliclass-stream", "health", "--address", f"127.0.0.1:{port}"]
    assert str(port) in dockerfile.find("EXPOSE", "runtime")[-1].args.split()
    assert grpc is not None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("serve", "--help"), "--config"),
        (("worker", "--help"), "--config"),
        (("health", "--help"), "--address"),
    ],
)
def test_entrypoint_commands_exist(args: tuple[str, ...], expected: str) -> None:
    """The image's ENTRYPOINT, CMD, HEALTHCHECK and the k8s worker run these subcommands."""
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_healthcheck_command_passes_only_while_the_server_is_serving(dockerfile: Dockerfile) -> None:
    """Run the HEALTHCHECK's command against a real grpc.health.v1 server on a free port."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    argv = exec_form(dockerfile.find("HEALTHCHECK", "runtime")[-1].args)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    check = [*argv[1 : argv.index("--address") + 1], address, "--timeout", "5"]
    try:
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert run_cli(*check).returncode != 0, "a warming-up or draining server must report unhealthy"
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        serving = run_cli(*check)
        assert serving.returncode == 0, serving.stderr
    finally:
        server.stop(0)
    assert run_cli(*check[:-1], "2").returncode != 0, "nothing listening must report unhealthy"


def test_the_images_non_editable_install_ships_every_module(tmp_path: Path) -> None:
    """Build the wheel the image's `pip install .` builds, from the files the Dockerfile copies.

    An editable install (as in development) would hide a package that a regular install leaves out.
    """
    import importlib.util
    import zipfile

    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("needs setuptools in this environment to build without isolation")
    context = tmp_path / "context"
    context.mkdir()
    packages = ("gliclass_core", "server", "worker")
    for source, _ in _copy_sources(read_dockerfile()):
        if source.startswith("docker/"):
            continue
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, context / source)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", "dist"],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (context / "dist").glob("gliclass_stream-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        path.relative_to(context).as_posix()
        for package in packages
        for path in (context / package).rglob("*")
        if path.suffix in (".py", ".proto") or path.name == "py.typed"
    }
    assert expected, "nothing copied"
    assert expected <= shipped, f"missing from the image's install: {sorted(expected - shipped)}"
