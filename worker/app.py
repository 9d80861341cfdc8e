"""`KafkaWorker`: runs the consume -> classify -> produce loop on its own thread."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from gliclass_core.config import AppConfig
from gliclass_core.service import ClassifyService
from worker.config import KafkaConfig, parse_kafka_config
from worker.loop import WorkerLoop
from worker.state import WorkerStatsSnapshot

log = logging.getLogger("gliclass.worker")

CLOSE_MARGIN_S = 10.0


class KafkaWorker:
    """The Kafka edge: `start()` spawns the loop thread, `stop()` drains and commits, `reload()` swaps routes.

    Scores through the `ClassifyService` (the runtime) at bulk priority: one pool with the gRPC edge.
    """

    def __init__(self, runtime: ClassifyService, app_config: AppConfig) -> None:
        self._runtime = runtime
        self.config: KafkaConfig = parse_kafka_config(app_config)
        self._label_sets = dict(app_config.label_sets)
        self._model_id = app_config.model.id
        self._reload: tuple[KafkaConfig, dict[str, Any], threading.Event] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._drain_timeout = self.config.drain_timeout_ms / 1000
        self._thread: threading.Thread | None = None
        self._loop: WorkerLoop | None = None
        self.error: BaseException | None = None
        self.clean_exit = False
        self.started = threading.Event()

    def start(self) -> None:
        """Connect and start the loop thread (returns once the clients are created)."""
        if self._thread is not None:
            raise RuntimeError("KafkaWorker already started")
        self._thread = threading.Thread(target=self._run, name="gliclass-kafka-worker", daemon=True)
        self._thread.start()
        self.started.wait(60)
        if self.error is not None:
            raise self.error

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def assignment(self) -> list[tuple[str, int]]:
        """Return the partitions this worker currently owns (a snapshot)."""
        return sorted(list(self._loop.lanes)) if self._loop is not None else []

    def stats(self) -> WorkerStatsSnapshot:
        """An immutable snapshot of the loop's counters (safe from any thread; bounded in size)."""
        return self._loop.stats.snapshot() if self._loop is not None else WorkerStatsSnapshot()

    def stop(self, drain_timeout: float | None = None) -> bool:
        """Stop fetching, finish in-flight work, commit, close. True when it exited cleanly in time.

        In-flight work gets `drain_timeout` seconds ([kafka] drain_timeout_ms when None); closing
        the clients (leaving the group, flushing) gets up to CLOSE_MARGIN_S more.
        """
        if drain_timeout is not None:
            self._drain_timeout = max(0.0, drain_timeout)
        self._stopping.set()
        if self._thread is None:
            return True
        self._thread.join(self._drain_timeout + CLOSE_MARGIN_S)
        return not self._thread.is_alive() and self.clean_exit

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the loop thread ends (True) or `timeout` passes."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def reload(self, app_config: AppConfig, timeout: float = 10.0) -> bool:
        """Validate a new config and hand its routes and label sets to the loop (in-flight work is kept).

        Returns once the loop uses them (True), or after `timeout` (False: it will, at its next
        iteration). Raises ConfigError (and keeps the running config) when the new one is invalid.
        """
        new = parse_kafka_config(app_config)
        kept = ("bootstrap_servers", "group_id", "delivery", "instance_id", "client", "consumer", "producer")
        changed = [k for k in kept if getattr(new, k) != getattr(self.config, k)]
        if changed:
            log.warning("reload: %s changed; those take effect after a restart", ", ".join(changed))
        applied = threading.Event()
        with self._lock:
            self._reload = (new, dict(app_config.label_sets), applied)
        if not self.running:
            self.config, self._label_sets = new, dict(app_config.label_sets)
            return True
        return applied.wait(timeout)

    def _apply_reload(self, loop: WorkerLoop) -> None:
        with self._lock:
            pending, self._reload = self._reload, None
        if pending is None:
            return
        new, label_sets, applied = pending
        old_topics = sorted(r.input for r in loop.config.routes)
        # Client settings stay as they were; routes, label sets and tuning change now.
        merged = KafkaConfig(
            **{
                **{k: getattr(new, k) for k in KafkaConfig.__dataclass_fields__},
                **{
                    k: getattr(loop.config, k)
                    for k in ("bootstrap_servers", "group_id", "delivery", "instance_id", "client")
                },
                "consumer": loop.config.consumer,
                "producer": loop.config.producer,
            }
        )
        loop.reconfigure(merged, label_sets)
        self.config, self._label_sets = merged, label_sets
        new_topics = sorted(r.input for r in merged.routes)
        if new_topics != old_topics:
            loop.consumer.subscribe(new_topics)
        log.info("reloaded: %d routes, %d label sets", len(merged.routes), len(label_sets))
        applied.set()

    def _run(self) -> None:
        try:
            loop = WorkerLoop(self.config, self._label_sets, self._runtime, self._model_id)
            self._loop = loop
        except BaseException as exc:
            self.error = exc
            self.started.set()
            log.error("kafka worker failed to start: %s", exc)
            return
        self.started.set()
        log.info(
            "kafka worker running: %s, routes %s",
            self.config.delivery,
            ", ".join(f"{r.input}->{r.output}" for r in self.config.routes),
        )
        try:
            while not self._stopping.is_set():
                self._apply_reload(loop)
                loop.step()
            log.info("kafka worker draining (up to %.1f s)", self._drain_timeout)
            started = time.monotonic()
            complete = loop.drain(self._drain_timeout)
            log.info(
                "kafka worker drained in %.1fs (%s)",
                time.monotonic() - started,
                "complete" if complete else "timed out; unfinished events will be re-read",
            )
            self.clean_exit = True
        except BaseException as exc:
            self.error = exc
            log.error("kafka worker stopped on error: %s", exc, exc_info=True)
        finally:
            try:
                loop.close()
            except Exception as exc:
                log.warning("closing kafka clients: %s", exc)
