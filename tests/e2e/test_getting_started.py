"""The README's and Getting started's "Classify a text three ways" blocks run as written against `dev`.

One `gliclass-stream dev` on free ports; the blocks' default addresses (localhost:8080, localhost:50051,
127.0.0.1:9092) are swapped for the ports it printed. The curl and Kafka blocks run wherever the
tests run; the gRPC block runs with grpcurl where it is installed, and otherwise its request (JSON, address,
method) is sent as written with the Python gRPC client.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
PAGES = (ROOT / "README.md", ROOT / "docs" / "getting-started.md")
SECTION = "## Classify a text three ways"


def blocks(kind: str) -> list[str]:
    """The distinct bash blocks of that section, in README and Getting started, using `kind`'s tool."""
    found: list[str] = []
    for page in PAGES:
        section = page.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
        for block in re.findall(r"```bash\n(.*?)```", section, re.S):
            tool = block.split()[0]
            if {"curl": "curl", "grpc": "grpcurl", "kafka": "python"}[kind] == tool and block not in found:
                found.append(block)
    assert found, f"no {kind} block under '{SECTION}'"
    return found


def cli() -> list[str]:
    script = Path(sys.executable).parent / "gliclass-stream"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.app.cli"]


class Dev:
    def __init__(self, text: str) -> None:
        self.http = re.search(r"web console: http://127\.0\.0\.1:(\d+)/", text).group(1)  # type: ignore[union-attr]
        self.grpc = re.search(r"gRPC: 127\.0\.0\.1:(\d+)", text).group(1)  # type: ignore[union-attr]
        self.kafka = re.search(r"kafka bootstrap servers: (\S+)", text).group(1)  # type: ignore[union-attr]

    def localise(self, block: str) -> str:
        return (
            block.replace("localhost:8080", f"localhost:{self.http}")
            .replace("localhost:50051", f"localhost:{self.grpc}")
            .replace("127.0.0.1:9092", self.kafka)
        )


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("dev")
    out, err = tmp / "dev.out", tmp / "dev.err"
    ports = ["--kafka-port", "0", "--grpc-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*cli(), "dev", "--device", "cpu", *ports],
        stdout=out.open("wb"),
        stderr=err.open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 240
        while "Consume the scored events" not in out.read_text():
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, "dev printed no instructions"
            time.sleep(0.2)
        running = Dev(out.read_text())
        ready = f"http://127.0.0.1:{running.http}/readyz"
        while subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", ready],
                             capture_output=True, text=True).stdout != "200":  # fmt: skip
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, "the model never became ready"
            time.sleep(0.5)
        yield running
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def run(block: str) -> str:
    done = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", block], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_curl_block_classifies(dev: Dev) -> None:
    for block in blocks("curl"):
        result = json.loads(run(dev.localise(block)))["results"][0]
        assert [s["label"] for s in result["scores"]] == ["billing", "bug report", "feature request"]
        assert result["labels"] and set(result["labels"]) <= {"billing", "bug report", "feature request"}


def test_the_grpc_block_classifies(dev: Dev) -> None:
    for block in blocks("grpc"):
        block = dev.localise(block)
        if shutil.which("grpcurl") is not None:
            result = json.loads(run(block))["results"][0]
        else:
            # Without grpcurl, send the block's own request (its JSON, address and method) with the
            # Python client: it checks everything in the block except grpcurl itself.
            result = _call_like_grpcurl(block)
        assert result["labelSet"] == "support" and [s["label"] for s in result["scores"]]


def _call_like_grpcurl(block: str) -> dict[str, Any]:
    import grpc
    from google.protobuf import json_format

    from server.proto import classifier_pb2 as pb

    words = shlex.split(block.replace("\\\n", " "))
    assert words[:2] == ["grpcurl", "-plaintext"] and words[2] == "-d", words
    body, address, method = words[3], words[4], words[5]
    assert method == "gliclass.v1.Classifier/Classify", method
    request = json_format.Parse(body, pb.ClassifyRequest())
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            "/" + method,
            request_serializer=pb.ClassifyRequest.SerializeToString,
            response_deserializer=pb.ClassifyResponse.FromString,
        )
        reply = call(request, timeout=60)
    return json_format.MessageToDict(reply)["results"][0]


def test_the_kafka_block_produces_and_reads_the_result(dev: Dev) -> None:
    for n, block in enumerate(blocks("kafka")):
        # A group of its own per run, so a second block reads from the start too.
        block = dev.localise(block).replace('"group.id": "quickstart"', f'"group.id": "quickstart-{n}"')
        event = json.loads(run(block).splitlines()[-1])
        assert event["label_set"] == "support" and "billing" in event["scores"]
        assert event["source"]["topic"] == "tickets"
