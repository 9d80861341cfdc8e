"""The one supervisor of `serve`, `worker` and `dev`: signals, reload requests, readiness and exit codes.

SIGTERM and SIGINT ask the process to stop (never un-asked: a SIGTERM that arrives while a reload
runs still stops the process right after it); SIGHUP asks for a reload of the config file. A
process on an asyncio loop (`serve`, `dev`) gets the signals on that loop (`install(loop=...)`,
callbacks run there); a process on threads (`worker`, `dev` without the gRPC server) waits for
them with `next_signal`. What each command prints on stderr and the code it exits with are spelled
here too, so the three commands report stop, failure and readiness the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from typing import Literal

from gliclass_core.errors import GliclassError

#: Stopped on request (SIGTERM / SIGINT), in-flight work finished or drained.
EXIT_OK = 0
#: The process cannot keep running: the model failed to load, its pool stopped, the worker stopped.
EXIT_FAILED = 1

Signal = Literal["stop", "reload"]


class ServeError(GliclassError):
    """The server cannot keep running (the model failed to load, or its pool stopped).

    Raised out of `serve`; the CLI prints it and exits with 2, as for every `GliclassError`.
    """

    reason = "serve"


def model_failure(error: BaseException | None, was_ready: bool) -> str:
    """What to say when the model pool reports `error`: it failed to load, or stopped after loading."""
    what = "the model pool stopped" if was_ready else "the model failed to load"
    return f"{what}: {error}"


class Supervisor:
    """Signal handling and status lines for one `gliclass-stream` command (`serve`, `worker`, `dev`)."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.stop_requested = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        self._on_stop: Callable[[], None] | None = None
        self._on_reload: Callable[[], None] | None = None

    def install(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        on_stop: Callable[[], None] | None = None,
        on_reload: Callable[[], None] | None = None,
        reload: bool = True,
    ) -> None:
        """Handle SIGTERM / SIGINT (stop) and, with `reload`, SIGHUP (reload).

        With `loop`, the handlers run on that loop (so `on_stop` / `on_reload` may touch asyncio
        objects); without it, they run in the main thread between bytecodes and only set flags.
        Where a signal cannot be handled (not the main thread, no such signal), it is left alone.
        """
        self._on_stop, self._on_reload = on_stop, on_reload
        handlers: dict[signal.Signals, Callable[[], None]] = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
        }
        if reload and hasattr(signal, "SIGHUP"):
            handlers[signal.SIGHUP] = self.request_reload
        for sig, handler in handlers.items():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
                if loop is not None:
                    loop.add_signal_handler(sig, handler)
                else:
                    signal.signal(sig, _ignoring_frame(handler))

    def request_stop(self) -> None:
        """Ask the process to stop (what SIGTERM and SIGINT do)."""
        self.stop_requested.set()
        self._wake.set()
        if self._on_stop is not None:
            self._on_stop()

    def request_reload(self) -> None:
        """Ask the process to re-read its config (what SIGHUP does)."""
        self._reload.set()
        self._wake.set()
        if self._on_reload is not None:
            self._on_reload()

    def next_signal(self, timeout: float) -> Signal | None:
        """Wait up to `timeout` s for a request: "stop" (it stays), "reload" (taken once), or None."""
        self._wake.wait(timeout)
        self._wake.clear()
        if self.stop_requested.is_set():
            return "stop"
        if self._reload.is_set():
            self._reload.clear()
            return "reload"
        return None

    def wait_for_stop(self) -> None:
        """Block until a stop is requested."""
        self.stop_requested.wait()

    def say(self, message: str, *, stdout: bool = False) -> None:
        """Print `gliclass-stream <command>: <message>` (stderr: status; stdout: what a user reads)."""
        print(
            f"gliclass-stream {self.command}: {message}",
            file=sys.stdout if stdout else sys.stderr,
            flush=True,
        )


def _ignoring_frame(handler: Callable[[], None]) -> Callable[[int, object], None]:
    def on_signal(signum: int, frame: object) -> None:
        handler()

    return on_signal
