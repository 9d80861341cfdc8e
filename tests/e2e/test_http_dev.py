"""`gliclass-stream dev` prints the console URL, and the HTTP reference's curl examples work as written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HTTP_REFERENCE = Path(__file__).parents[2] / "docs" / "reference" / "http.md"


def cli() -> list[str]:
    script = Path(sys.executable).parent / "gliclass-stream"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.app.cli"]


def readme_curl_block() -> str:
    return next(b for b in re.findall(r"```bash\n(.*?)```", HTTP_REFERENCE.read_text(), re.S) if "curl" in b)


def test_dev_prints_the_console_url_and_the_readme_curl_examples_work(tmp_path: Path) -> None:
    out_path, err_path = tmp_path / "dev.out", tmp_path / "dev.err"
    proc = subprocess.Popen(
        [
            *cli(),
            "dev",
            "--kafka-port",
            "0",
            "--grpc-address",
            "127.0.0.1:0",
            "--http-address",
            "127.0.0.1:0",
        ],
        stdout=out_path.open("wb"),
        stderr=err_path.open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while "Consume the scored events" not in out_path.read_text():
            assert proc.poll() is None, err_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "dev printed no instructions"
            time.sleep(0.2)
        text = out_path.read_text()
        url = re.search(r"web console: (http://127\.0\.0\.1:\d+/)", text).group(1)
        assert re.search(r"gRPC: 127\.0\.0\.1:\d+", text) and "kafka bootstrap servers" in text
        port = url.rsplit(":", 1)[1].rstrip("/")
        while True:  # the curl examples classify: wait until the model is warm
            ready = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{url}readyz"],
                                   capture_output=True, text=True)  # fmt: skip
            if ready.stdout == "200":
                break
            assert time.monotonic() < deadline + 120, "the model never became ready"
            time.sleep(0.5)
        block = readme_curl_block().replace("localhost:8080", f"localhost:{port}")
        done = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", block], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        first, second = json.loads(lines[0]), json.loads(lines[1])
        assert [s["label"] for s in first["results"][0]["scores"]] == ["billing", "bug report"]
        assert second["results"][0]["labelSet"] == "support" and len(second["results"][0]["labels"]) == 1
        streamed = [json.loads(line) for line in lines[2:4]]
        assert [r["result"]["id"] for r in streamed] == ["a", "b"]
        assert [s["name"] for s in json.loads(lines[4])["labelSets"]] == ["support", "topics"]
        assert any(line.startswith("gliclass_scheduler_items_total{") for line in lines[5:])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
