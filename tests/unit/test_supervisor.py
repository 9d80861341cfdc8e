"""The one supervisor of serve, worker and dev: real signals sent to this process reach it as requests."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

from server.app.supervisor import Supervisor, model_failure

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@pytest.fixture(autouse=True)
def restore_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_sighup_is_one_reload_and_sigterm_a_stop_that_stays() -> None:
    supervisor = Supervisor("worker")
    supervisor.install()
    os.kill(os.getpid(), signal.SIGHUP)
    assert supervisor.next_signal(5.0) == "reload"
    assert supervisor.next_signal(0.01) is None  # taken once
    os.kill(os.getpid(), signal.SIGHUP)
    os.kill(os.getpid(), signal.SIGTERM)
    # A stop wins over a pending reload, and is never un-asked.
    assert supervisor.next_signal(5.0) == "stop"
    assert supervisor.next_signal(0.01) == "stop"


def test_sigint_stops_too_and_reload_false_leaves_sighup_alone() -> None:
    before = signal.getsignal(signal.SIGHUP)
    supervisor = Supervisor("dev")
    supervisor.install(reload=False)
    assert signal.getsignal(signal.SIGHUP) is before
    os.kill(os.getpid(), signal.SIGINT)
    supervisor.wait_for_stop()  # returns: the stop was requested
    assert supervisor.next_signal(0.01) == "stop"


def test_on_a_loop_the_callbacks_run_there() -> None:
    async def main() -> list[str]:
        seen: list[str] = []
        stop = asyncio.Event()
        supervisor = Supervisor("serve")
        supervisor.install(
            loop=asyncio.get_running_loop(),
            on_stop=lambda: (seen.append("stop"), stop.set()),
            on_reload=lambda: seen.append("reload"),
        )
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5.0)
        return seen

    assert asyncio.run(main()) == ["reload", "stop"]


def test_status_lines_name_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    Supervisor("worker").say("draining")
    Supervisor("serve").say("listening on 127.0.0.1:1", stdout=True)
    out, err = capsys.readouterr()
    assert err == "gliclass-stream worker: draining\n"
    assert out == "gliclass-stream serve: listening on 127.0.0.1:1\n"


def test_model_failure_says_whether_it_ever_loaded() -> None:
    error = RuntimeError("out of memory")
    assert model_failure(error, was_ready=False) == "the model failed to load: out of memory"
    assert model_failure(error, was_ready=True) == "the model pool stopped: out of memory"
