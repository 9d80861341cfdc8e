"""A replica: one model copy on one device, pulling batches from the scheduler on its own thread.

The forward pass runs here and only here (never on an event loop), under
`torch.inference_mode()`. A failing batch is split until the rows that fail are failed alone
(`supervision.isolate`; anything raised counts, BaseException included); CUDA out-of-memory splits
the batch in two and retries each half once. A fault outside a batch's own guard (in the queue or
bookkeeping code) fails the batch held at the time and restarts the loop; a replica that keeps
faulting stops and reports it, so the pool leaves ready instead of leaving futures waiting
(`supervision`, the same rule as the intake thread's).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from gliclass_core.model import Model
from gliclass_core.runtime.scheduler import Scheduler
from gliclass_core.runtime.sessions.batch import fail_unstarted, resolve, run_session_batch
from gliclass_core.runtime.sessions.queue import SessionBatch
from gliclass_core.runtime.supervision import MAX_FAULTS, FaultBudget, isolate
from gliclass_core.runtime.tracing import batch_span
from gliclass_core.runtime.work import Batch
from gliclass_core.types import ClassifyItem, EncodedPass

log = logging.getLogger(__name__)

WARM_UP_ITEM = ClassifyItem(text="Warm-up text for the model replica.", labels=("first", "second"))

Results = list[np.ndarray | BaseException]


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA (or other accelerator) out-of-memory errors."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Replica:
    """One model copy on `device`, computing batches on a dedicated thread."""

    def __init__(
        self,
        name: str,
        device: str,
        scheduler: Scheduler,
        load: Callable[[], Model],
        *,
        cpu_threads: int | None = None,
        index: int = 0,
    ) -> None:
        self.name = name
        #: Its place in the pool: the session batches of the sessions pinned to it come here.
        self.index = index
        self.device = device
        self.scheduler = scheduler
        self.classifier: Model | None = None
        self.batches = 0
        self._budget = FaultBudget()
        self._load = load
        self._cpu_threads = cpu_threads
        self._thread: threading.Thread | None = None

    def start(
        self,
        on_ready: Callable[[Replica, BaseException | None], None],
        on_stopped: Callable[[Replica, BaseException], None] | None = None,
    ) -> None:
        """Load and warm up in the replica's thread, report via `on_ready`, then serve batches.

        `on_stopped(replica, exc)` is called (on the replica's thread) if the replica gives up
        after faulting `MAX_FAULTS` times within `FAULT_WINDOW_S`.
        """
        self._thread = threading.Thread(
            target=self._main, args=(on_ready, on_stopped), name=f"gliclass-{self.name}", daemon=True
        )
        self._thread.start()

    @property
    def faults(self) -> int:
        """Faults of the loop since start (each failed the batch it held, then restarted)."""
        return self._budget.faults

    @property
    def alive(self) -> bool:
        """True while the replica's thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _main(
        self,
        on_ready: Callable[[Replica, BaseException | None], None],
        on_stopped: Callable[[Replica, BaseException], None] | None,
    ) -> None:
        import torch

        try:
            if self._cpu_threads and self.device == "cpu":
                torch.set_num_threads(self._cpu_threads)
            self.classifier = self._load()
            if self.device.startswith("cuda"):
                # The current stream is per thread: each replica gets its own, so replicas sharing a GPU
                # overlap instead of queueing behind each other's kernels on the default stream.
                torch.cuda.synchronize(self.device)
                torch.cuda.set_stream(torch.cuda.Stream(device=self.device))
            self.forward(self.classifier.prepare(WARM_UP_ITEM).passes, record=False)
        except BaseException as exc:
            log.exception("replica %s on %s failed to start", self.name, self.device)
            on_ready(self, exc)
            return
        on_ready(self, None)
        self.serve(on_stopped)

    def serve(self, on_stopped: Callable[[Replica, BaseException], None] | None = None) -> None:
        """Compute batches until the scheduler closes, surviving faults outside a batch's guard.

        A fault fails the batch held at the time (`Scheduler.abandon`), then the loop starts again
        after a short pause; at `MAX_FAULTS` within `FAULT_WINDOW_S` the replica stops and calls
        `on_stopped`.
        """
        while True:
            batch: Batch | SessionBatch | None = None
            try:
                while (batch := self.scheduler.next_batch(self.index)) is not None:
                    if isinstance(batch, SessionBatch):
                        self.run_session_batch(batch)
                    else:
                        self.run_batch(batch)
                    batch = None
                return
            except BaseException as exc:
                log.exception("replica %s on %s faulted outside a batch", self.name, self.device)
                if batch is not None:
                    self._abandon(batch, _unpinned(exc))
                    batch = None
                if self._budget.record():
                    log.error("replica %s on %s stops after %d faults", self.name, self.device, MAX_FAULTS)
                    if on_stopped is not None:
                        on_stopped(self, exc)
                    return
            # Outside the except block, so the traceback no longer pins the batch while waiting.
            time.sleep(self._budget.restart_delay())

    def _abandon(self, batch: Batch | SessionBatch, exc: BaseException) -> None:
        try:
            if isinstance(batch, SessionBatch):
                batch.store.discard(batch.session_ids)  # they may be half-appended: start afresh
                failed = self.scheduler.sessions.abandon(batch, exc, self.device)
            else:
                failed = self.scheduler.abandon(batch, exc, self.device)
        except BaseException:
            log.exception("replica %s: failing the faulted batch's items failed too", self.name)
            return
        log.error("replica %s on %s: failed %d items of the faulted batch", self.name, self.device, failed)

    def run_batch(self, batch: Batch) -> None:
        """Compute one batch and hand its results (or per-row errors) back to the scheduler."""
        results: Results
        started = time.perf_counter()
        try:
            with batch_span(
                batch.span_contexts,
                size=len(batch.entries),
                real_tokens=batch.real_tokens,
                padded_tokens=batch.padded_tokens,
                device=self.device,
                queue_wait_s=batch.max_queue_wait_s,
                priority=batch.decision.priority.name.lower() if batch.decision.priority is not None else "",
            ):
                results = self.forward_splitting(batch.passes)
        except BaseException as exc:  # the span machinery itself failed: still answer every row
            results = [exc] * len(batch.entries)
        self.batches += 1
        self.scheduler.complete(batch, results, self.device, compute_s=time.perf_counter() - started)

    def run_session_batch(self, batch: SessionBatch) -> None:
        """Apply one session batch to this replica's store (`sessions.batch`) and answer its callers.

        A fault of the batch's own work fails its appends only; the batch's sessions may run again
        once it is complete.
        """
        import torch

        fail_unstarted(batch.dropped)
        with torch.inference_mode():
            outcomes = run_session_batch(batch, self.device)
        self.scheduler.sessions.complete(batch)
        resolve(batch, outcomes)

    def forward_splitting(self, passes: Sequence[EncodedPass]) -> Results:
        """Forward the batch; on out-of-memory retry each half once, failing only what still fails;
        on any other failure split until the failing rows fail alone."""
        try:
            return list(self.forward(passes))
        except BaseException as exc:  # a native panic is a BaseException: it must not kill the thread
            first = _unpinned(exc)
            oom = is_out_of_memory(exc)
            if len(passes) < 2:
                log.warning("batch of %d rows failed on %s", len(passes), self.device, exc_info=exc)
                return [first] * len(passes)
        # Retry only after leaving the except block: its traceback pins the failed pass's activations.
        if not oom:
            log.warning("batch of %d rows failed on %s (%s); splitting it", len(passes), self.device, first)
            return isolate(self.forward, passes, first)
        self.scheduler.record_oom_split()
        log.warning("out of memory on %s with %d rows; retrying in halves", self.device, len(passes))
        _release_cached_memory(self.device)
        half = len(passes) // 2
        results: Results = []
        for part in (passes[:half], passes[half:]):
            try:
                results.extend(self.forward(part))
            except BaseException as exc:
                results.extend([_unpinned(exc)] * len(part))
        return results

    def forward(self, passes: Sequence[EncodedPass], *, record: bool = True) -> list[np.ndarray]:
        """One timed forward pass under inference mode."""
        import torch

        assert self.classifier is not None
        started = time.perf_counter()
        with torch.inference_mode():
            logits = self.classifier.forward(passes)
        if record:
            self.scheduler.record_compute(time.perf_counter() - started, self.device)
        if len(logits) != len(passes):
            raise RuntimeError(f"forward returned {len(logits)} results for {len(passes)} passes")
        return list(logits)


def _release_cached_memory(device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _unpinned(exc: BaseException) -> BaseException:
    """Drop the traceback (logged already) so its frames do not keep device memory alive."""
    return exc.with_traceback(None)
