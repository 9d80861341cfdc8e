"""Secrets stay out of what `gliclass-stream worker` logs, whether set in the file or the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

FILE_SECRETS = {
    "sasl.password": "file-pass-4f9c",
    "sasl.oauthbearer.config": "principal=svc clientSecret=oauth-secret-7d21",
    "ssl.key.password": "key-pass-a8e0",
}
ENV_SECRETS = {
    "GLICLASS_KAFKA__CLIENT__SASL_PASSWORD": "1_000",  # overrides the file's, as a string
    "GLICLASS_KAFKA__PRODUCER__SASL_OAUTHBEARER_CONFIG": "clientSecret=env-secret-3b5e",
}


def cli() -> list[str]:
    script = Path(sys.executable).parent / "gliclass-stream"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.app.cli"]


def test_worker_startup_log_masks_every_secret(kafka, tmp_path: Path) -> None:
    src = f"secrets-in-{uuid.uuid4().hex[:8]}"
    kafka.create_topics({src: 1, f"{src}.out": 1, f"{src}.dlq": 1})
    client = "".join(f'"{key}" = "{value}"\n' for key, value in FILE_SECRETS.items())
    config = tmp_path / "worker.toml"
    config.write_text(
        f"""
[model]
id = "builtin:minilm"
device = "cpu"

[label_sets.support]
labels = ["billing", "bug report"]

[kafka]
bootstrap_servers = "{kafka.bootstrap_servers}"
group_id = "secrets-{uuid.uuid4().hex[:8]}"

[kafka.client]
"security.protocol" = "PLAINTEXT"
{client}
[kafka.consumer]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500

[[kafka.routes]]
input = "{src}"
output = "{src}.out"
label_set = "support"
"""
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*cli(), "worker", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **ENV_SECRETS},
        )
        try:
            deadline = time.monotonic() + 120
            while not all(f"kafka {c} settings" in log.read_text() for c in ("consumer", "producer")):
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            time.sleep(1.0)  # let librdkafka log whatever it logs after connecting
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    text = log.read_text(errors="replace")
    for secret in [*FILE_SECRETS.values(), *ENV_SECRETS.values()]:
        assert secret not in text, f"{secret!r} appears in the worker's log"
    # The settings were logged, with the keys present and their values masked.
    for key in ("sasl.password", "sasl.oauthbearer.config", "ssl.key.password"):
        assert f"'{key}': '***'" in text
