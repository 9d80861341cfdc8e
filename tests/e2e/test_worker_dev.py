"""`gliclass-stream dev`: broker + server + worker; the printed snippet works; Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from fixtures.kafka import KafkaEnv


def cli() -> list[str]:
    script = Path(sys.executable).parent / "gliclass-stream"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.app.cli"]


def test_dev_prints_working_instructions_and_stops_on_ctrl_c(tmp_path, gliclass_cache):
    out_path = tmp_path / "dev.out"
    proc = subprocess.Popen(
        [*cli(), "dev", "--kafka-port", "0", "--grpc-address", "127.0.0.1:0", "--device", "cpu"],
        stdout=out_path.open("wb"),
        stderr=(tmp_path / "dev.err").open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while "Consume the scored events" not in out_path.read_text():
            assert proc.poll() is None, (tmp_path / "dev.err").read_text()[-3000:]
            assert time.monotonic() < deadline, "dev printed no instructions"
            time.sleep(0.2)
        text = out_path.read_text()
        bootstrap = re.search(r"kafka bootstrap servers: (\S+)", text).group(1)
        assert re.search(r"gRPC: 127\.0\.0\.1:\d+", text)
        # Run the produce snippet exactly as printed.
        snippet = text.split("python - <<'EOF'\n")[1].split("\nEOF")[0]
        subprocess.run([sys.executable, "-c", snippet], check=True, timeout=60)
        outputs = KafkaEnv(bootstrap, external=False).read_all(
            ["tickets.scored", "posts.scored"], 2, timeout=120
        )
        bodies = {json.loads(m.value())["label_set"]: json.loads(m.value()) for m in outputs}
        assert set(bodies) == {"support", "topics"}
        assert bodies["topics"]["id"] == "p-1" and "sport" in bodies["topics"]["scores"]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0
        assert "stopped" in (tmp_path / "dev.err").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
