"""One supervision rule for every runtime thread (intake, replicas, and the completion they run).

A thread's loop is guarded by `except BaseException`: the Rust tokenizer's panic
(`pyo3_runtime.PanicException`) derives from BaseException, and a thread that lets any exception
escape leaves every item behind it waiting forever. On a fault the thread fails only the work it
held (split first, where a round or batch can be split, so that one bad item fails alone), then
restarts its loop after a short pause; a thread that faults `MAX_FAULTS` times within
`FAULT_WINDOW_S` stops for good and reports why, which takes the pool out of ready (health
NOT_SERVING, `serve` and `worker` exit non-zero) and fails what is queued with NotReady.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

#: A thread whose loop faults this many times within `FAULT_WINDOW_S` stops for good.
MAX_FAULTS = 5
FAULT_WINDOW_S = 60.0
#: Pause before restarting a loop after a fault, doubling with each recent fault.
RESTART_DELAY_S = 0.05

T = TypeVar("T")
R = TypeVar("R")

#: Called once, on the faulting thread, when a thread gives up: (thread name, faults, last error).
OnStopped = Callable[[str, int, BaseException], None]


class FaultBudget:
    """Counts a thread's faults and says when it must stop instead of restarting."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.faults = 0
        self._clock = clock
        self._recent: deque[float] = deque(maxlen=MAX_FAULTS)

    def record(self) -> bool:
        """Count one fault; True when the thread has used its budget and must stop."""
        self.faults += 1
        now = self._clock()
        self._recent.append(now)
        return len(self._recent) == MAX_FAULTS and now - self._recent[0] <= FAULT_WINDOW_S

    def restart_delay(self) -> float:
        """Seconds to pause before the loop starts again (doubling with each recent fault)."""
        now = self._clock()
        recent = sum(now - t <= FAULT_WINDOW_S for t in self._recent)
        return RESTART_DELAY_S * 2 ** max(0, recent - 1)


def isolate(
    run: Callable[[Sequence[T]], Sequence[R]], items: Sequence[T], first: BaseException
) -> list[R | BaseException]:
    """Find which items make `run` fail: split in halves until each failure is down to one item.

    `run(items)` already failed with `first`. Returns one outcome per item, in order: its result,
    or the exception its smallest failing group raised. Costs at most about 2 * len(items) calls,
    and only when many items fail; one bad item among n costs about 2 * log2(n) calls.
    """
    if len(items) <= 1:
        return [first] * len(items)
    half = len(items) // 2
    out: list[R | BaseException] = []
    for part in (items[:half], items[half:]):
        try:
            results = run(part)
        except BaseException as exc:  # a panic must fail its item, not the thread
            out.extend(isolate(run, part, exc.with_traceback(None)))
            continue
        if len(results) != len(part):
            raise RuntimeError(f"{len(results)} results for {len(part)} items")
        out.extend(results)
    return out
