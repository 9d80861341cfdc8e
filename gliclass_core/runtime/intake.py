"""The scheduler's intake thread: it tokenizes what was submitted, many items per call, and queues
their passes.

`Scheduler.submit` only plans an item and stages it here with its rows reserved in the queue.
This thread takes everything staged meanwhile (interactive first, then bulk up to a character
budget), tokenizes it in one `Model.encode` call (the Rust `encode_batch`, which releases the
GIL) outside the lock, and queues the passes in place of the reserved rows. It shares the
scheduler's lock; every method but the thread's own loop is called with that lock held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence

from gliclass_core.model import Model
from gliclass_core.runtime.batch_forming import Priority
from gliclass_core.runtime.completion import as_batch_failure, fail_future
from gliclass_core.runtime.pass_queue import PassQueue
from gliclass_core.runtime.stats import StatsRecorder
from gliclass_core.runtime.supervision import FaultBudget, OnStopped, isolate
from gliclass_core.runtime.work import SubmittedItem
from gliclass_core.types import PreparedItem

log = logging.getLogger(__name__)

#: One intake round tokenizes at most this many items, and bulk items only up to this many
#: characters, so an interactive item arriving meanwhile waits behind little tokenization.
_INTAKE_MAX_ITEMS = 512
_INTAKE_BULK_CHARS = 64_000


class Intake:
    """Staged items per priority and the thread that tokenizes and queues them."""

    def __init__(
        self, lock: threading.Lock, queued: threading.Condition, passes: PassQueue, stats: StatsRecorder
    ) -> None:
        self._lock = lock
        self._wake = threading.Condition(lock)  # the intake thread waits here
        self._queued = queued  # notified (replicas wait there) once passes are queued
        self._passes = passes
        self._stats = stats
        self._staged: dict[Priority, deque[SubmittedItem]] = {
            Priority.INTERACTIVE: deque(),
            Priority.BULK: deque(),
        }
        self._round: list[SubmittedItem] = []  # items the intake thread is tokenizing right now
        self._classifier: Model | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._budget = FaultBudget()
        #: Called (on the intake thread) when the thread stops for good after repeated faults.
        self.on_stopped: OnStopped | None = None

    @property
    def faults(self) -> int:
        """Faults of the intake loop since start (each failed the round it held, then restarted)."""
        return self._budget.faults

    @property
    def alive(self) -> bool:
        """True while the thread runs (False before `open` and after it stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def open(self, classifier: Model) -> None:
        """Tokenize with `classifier` from now on; start the thread the first time."""
        self._classifier = classifier
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="gliclass-intake", daemon=True)
            self._thread.start()

    def stage(self, priority: Priority, items: Sequence[SubmittedItem]) -> None:
        """Hand over items whose rows are reserved already; wake the thread if anything waits."""
        staged = self._staged[priority]
        staged.extend(items)
        if staged:
            self._wake.notify()

    def close(self) -> list[SubmittedItem]:
        """Stop the thread; return the staged items not done yet (and those being tokenized), done now."""
        self._closed = True
        self._wake.notify_all()
        items: dict[int, SubmittedItem] = {}
        for staged in (*self._staged.values(), self._round):
            for item in staged:
                if not item.done:
                    item.done = True
                    item.staged_rows = 0
                    items[id(item)] = item
        for queue in self._staged.values():
            queue.clear()
        # Not cleared in place: the thread still holds that list and matches it to what its
        # encode returns; its items are done now, so it queues none of them.
        self._round = []
        return list(items.values())

    def join(self, timeout: float) -> None:
        """Wait (lock not held) for the thread to return after `close`."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # The thread returns once it sees `_closed` (a round it is tokenizing takes
            # milliseconds). Joined so that no thread is inside the Rust tokenizer while the
            # interpreter shuts down, which can abort the process after a clean stop.
            thread.join(timeout=timeout)

    def _take_round(self) -> list[SubmittedItem]:
        """The next intake round: interactive items first, then bulk up to a character budget."""
        taken: list[SubmittedItem] = []
        chars = 0
        for priority in (Priority.INTERACTIVE, Priority.BULK):
            staged = self._staged[priority]
            while staged and len(taken) < _INTAKE_MAX_ITEMS:
                if priority is Priority.BULK and taken and chars >= _INTAKE_BULK_CHARS:
                    return taken
                item = staged.popleft()
                if not item.done:
                    taken.append(item)
                    chars += len(item.plan.item.text)
        return taken

    def _run(self) -> None:
        """The intake thread: serve rounds; on a fault fail the round held, restart or stop."""
        while True:
            try:
                self._serve()
                return
            except BaseException as exc:
                log.exception("the intake thread faulted; failing the round it held")
                failed = self._fail_round(exc.with_traceback(None))
                log.error("intake: failed %d items of the faulted round", failed)
                if self._budget.record():
                    log.error("the intake thread stops after %d faults", self._budget.faults)
                    if self.on_stopped is not None:
                        self.on_stopped("intake", self._budget.faults, exc)
                    return
            # Outside the except block, so the traceback no longer pins the round while waiting.
            time.sleep(self._budget.restart_delay())

    def _serve(self) -> None:
        """Tokenize staged submissions in batches and queue their passes, until closed."""
        while True:
            with self._lock:
                while not (self._staged[Priority.INTERACTIVE] or self._staged[Priority.BULK]):
                    if self._closed:
                        return
                    self._wake.wait()
                taken = self._round = self._take_round()
                classifier = self._classifier
            if not taken or classifier is None:
                continue
            outcomes = self._encode(classifier, taken)
            failed: list[tuple[SubmittedItem, BaseException]] = []
            with self._lock:
                good = [(i, p) for i, p in zip(taken, outcomes) if not isinstance(p, BaseException)]
                self._passes.enqueue_tokenized([i for i, _ in good], [p for _, p in good])
                for item, outcome in zip(taken, outcomes):
                    if isinstance(outcome, BaseException) and not item.done:
                        # (else cancelled or shut down while being tokenized)
                        item.done = True
                        self._passes.unqueue(item)
                        failed.append((item, outcome))
                self._round = []
                self._queued.notify_all()
            for item, error in failed:
                fail_future(item.future, as_batch_failure(error, "tokenization"))
            if failed:
                self._stats.count("failed_items", len(failed))

    def _encode(self, classifier: Model, taken: list[SubmittedItem]) -> list[PreparedItem | BaseException]:
        """Tokenize a round; when `encode` raises (a tokenizer bug or panic: `plan` checked the
        input), split the round until each failure is down to the item that causes it."""

        def encode(items: Sequence[SubmittedItem]) -> list[PreparedItem]:
            return classifier.encode([item.plan for item in items])

        try:
            prepared: list[PreparedItem | BaseException] = list(encode(taken))
            if len(prepared) != len(taken):
                raise RuntimeError(f"encode returned {len(prepared)} items for {len(taken)}")
            return prepared
        except BaseException as exc:
            log.exception("tokenizing %d items failed; splitting the round to find the cause", len(taken))
            first = exc.with_traceback(None)
        return isolate(encode, taken, first)

    def _fail_round(self, exc: BaseException) -> int:
        """Fail the items of the round the thread held when it faulted; how many were failed."""
        with self._lock:
            items = [item for item in self._round if not item.done]
            for item in items:
                item.done = True
                self._passes.unqueue(item)
            self._round = []
            self._queued.notify_all()
        failure = as_batch_failure(exc, "the intake thread (it faulted)")
        failed = sum(fail_future(item.future, failure) for item in items)
        self._stats.count("failed_items", failed)
        return failed
