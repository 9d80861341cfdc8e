"""Run the compose stack's gliclass service without Docker, as a by-hand smoke test.

    python docker/smoke_local.py        # needs the project's venv with the [test] extra (pyyaml)

Starts the embedded Kafka-protocol broker (tansu) in place of the `kafka` service, creates the
topics that `kafka-init` would (its TOPICS), runs the `gliclass` service's command with the config
compose mounts (docker/gliclass.toml; only the broker address and gRPC port are overridden, through
GLICLASS_* variables as a deployment would), waits for the image's HEALTHCHECK command to pass,
sends a ticket, a post and an undecodable record, prints what comes out of the output and
dead-letter topics, then stops the server with SIGTERM and checks it exits 0.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from worker.broker import EmbeddedBroker, create_topics, free_port

DOCKER = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).with_name("gliclass-stream"))


def main() -> int:
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    topics = {
        s.split(":")[0]: int(s.split(":")[1]) for s in services["kafka-init"]["environment"]["TOPICS"].split()
    }
    dockerfile = (DOCKER / "Dockerfile").read_text()
    health = json.loads(re.search(r"CMD (\[\"gliclass-stream\", \"health\".*\])", dockerfile).group(1))
    command = [
        c.replace("/etc/gliclass/gliclass.toml", str(DOCKER / "gliclass.toml"))
        for c in services["gliclass"]["command"]
    ]
    port = free_port()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as cache:
        bootstrap = broker.bootstrap_servers
        create_topics(bootstrap, topics)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GLICLASS_", "OTEL_"))}
        env |= {
            "GLICLASS_CACHE": cache,  # a fresh model-cache volume
            "GLICLASS_KAFKA__BOOTSTRAP_SERVERS": bootstrap,  # compose: kafka:9092
            "GLICLASS_GRPC__ADDRESS": f"127.0.0.1:{port}",  # compose: 0.0.0.0:50051
            # tansu's first group join is slow with librdkafka's default session timeout.
            "GLICLASS_KAFKA__CONSUMER": '{"session.timeout.ms" = 6000, "heartbeat.interval.ms" = 500}',
        }
        print("$", "gliclass-stream", *command, flush=True)
        started = time.monotonic()
        server = subprocess.Popen([CLI, *command], env=env)
        check = [CLI, *health[1:-1], f"127.0.0.1:{port}"]
        while subprocess.run(check, capture_output=True).returncode != 0:
            if server.poll() is not None or time.monotonic() - started > 300:
                print("FAIL: never healthy", file=sys.stderr)
                server.kill()
                return 1
            time.sleep(2)
        print(f"HEALTHCHECK passes after {time.monotonic() - started:.1f} s", flush=True)
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(
            "tickets", json.dumps({"id": "t-1", "text": "I was charged twice this month"}).encode()
        )
        producer.produce("posts", b"Buy cheap watches now!!! Click this link to win a prize")
        producer.produce("tickets", b"\xff\xfe not UTF-8")
        producer.flush(10)
        want = {"tickets.scored", "posts.scored", "tickets.dlq"}
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"smoke-{uuid.uuid4().hex[:8]}",
                "session.timeout.ms": 6000,
            }
        )
        meta = consumer.list_topics(timeout=10)
        consumer.assign([TopicPartition(t, p, 0) for t in want for p in meta.topics[t].partitions])
        seen: dict[str, bytes] = {}
        deadline = time.monotonic() + 120
        while seen.keys() != want and time.monotonic() < deadline:
            record = consumer.poll(1.0)
            if record is not None and not record.error():
                seen[record.topic()] = record.value()
                headers = {k: v.decode(errors="replace") for k, v in record.headers() or []}
                print(record.topic(), record.value()[:200], headers or "", flush=True)
        consumer.close()
        server.send_signal(signal.SIGTERM)
        code = server.wait(60)
        print(f"serve exited {code} after SIGTERM")
        ok = seen.keys() == want and code == 0
        print("OK" if ok else f"FAIL: got {sorted(seen)}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
