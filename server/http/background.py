"""The HTTP edge on its own event-loop thread, for `worker`, whose main thread is not asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from gliclass_core.auth import KeyStore
from gliclass_core.service import ClassifyService
from server.http.config import HttpConfig
from server.http.server import HttpServer


class BackgroundHttp:
    """`/metrics`, probes, `/v1/stats` and the console's live view for a process without a loop."""

    def __init__(
        self,
        config: HttpConfig,
        runtime: ClassifyService,
        registry: Any,
        worker: Callable[[], Any],
        keys: KeyStore | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gliclass-http", daemon=True)
        self._config, self._runtime, self._registry, self._worker = config, runtime, registry, worker
        self._keys = keys
        self.server: HttpServer | None = None

    def start(self) -> int:
        """Start the thread and bind; return the port."""
        self._thread.start()

        async def build() -> int:
            self.server = HttpServer(
                self._config, self._runtime, registry=self._registry, worker=self._worker, keys=self._keys
            )
            return await self.server.start()

        return asyncio.run_coroutine_threadsafe(build(), self._loop).result(30)

    def stop(self, grace: float = 2.0) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(grace), self._loop).result(grace + 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
