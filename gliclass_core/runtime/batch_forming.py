"""Batch forming: a pure function from queued passes (plus a clock) to the next batch.

No threads, no model, no mutation: the scheduler hands in snapshots of its two queues and applies
the `BatchDecision` it gets back. That keeps every policy decision (priority, starvation, token
budget counting PADDED tokens, deadlines, length grouping) unit-testable on plain dataclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from gliclass_core.config import BatchingConfig


class Priority(IntEnum):
    """Traffic class of a submission. Lower value is served first."""

    INTERACTIVE = 0
    BULK = 1


@dataclass(frozen=True)
class PendingPass:
    """One queued forward-pass row, as batch forming sees it.

    `key` is unique and increases with arrival, so it orders passes of equal age and length.
    """

    key: int
    num_tokens: int
    priority: Priority
    enqueued_at: float
    deadline: float | None = None


#: The `[batching]` defaults: the policy's limits default to the same values.
_CONFIG = BatchingConfig()


@dataclass(frozen=True)
class BatchPolicy:
    """Limits and trade-offs of batch forming (all times in seconds)."""

    max_batch_size: int = _CONFIG.max_batch_size
    max_batch_tokens: int = _CONFIG.max_batch_tokens
    max_wait_s: float = _CONFIG.max_wait_ms / 1000.0
    #: Grouping stops adding rows once real/padded tokens of the batch would drop below this.
    min_padding_efficiency: float = 0.9
    #: Bulk is "starved" when no bulk batch ran for this long while bulk work waited; it then
    #: gets the next batch even though interactive work is queued (or a replica is reserved).
    bulk_starvation_s: float = 0.25
    #: While interactive traffic was seen within `interactive_window_s`, bulk batches are capped
    #: at this many padded tokens, bounding how long an interactive item waits behind one.
    bulk_tokens_while_interactive: int = 2048
    interactive_window_s: float = 1.0

    @classmethod
    def from_config(cls, config: BatchingConfig, **overrides: float) -> BatchPolicy:
        """Build from the `[batching]` config section (plus keyword overrides)."""
        base = cls(
            max_batch_size=config.max_batch_size,
            max_batch_tokens=config.max_batch_tokens,
            max_wait_s=config.max_wait_ms / 1000.0,
        )
        merged = {**base.__dict__, **overrides}
        merged["bulk_tokens_while_interactive"] = min(
            merged["bulk_tokens_while_interactive"], config.max_batch_tokens
        )
        return cls(**merged)


@dataclass(frozen=True)
class QueueState:
    """What batch forming needs to know besides the queues themselves."""

    now: float
    last_interactive_at: float = float("-inf")
    #: When a bulk batch was last dispatched or finished (bulk was being served until then).
    last_bulk_dispatch_at: float = float("-inf")
    #: Bulk batches being computed right now: bulk is being served, so it is not starving.
    bulk_in_flight: int = 0
    #: True when this replica must keep itself free for interactive work (another one is busy).
    reserve_for_interactive: bool = False
    #: Shutting down: dispatch whatever is queued without waiting for a fuller batch.
    draining: bool = False


@dataclass(frozen=True)
class BatchDecision:
    """The result of one forming step.

    `batch` is to be computed now (possibly empty); `expired` are to be failed with
    DeadlineExceeded without compute; `wake_at` is when to look again if nothing was dispatched
    (None: only when new work arrives).
    """

    batch: tuple[PendingPass, ...] = ()
    expired: tuple[PendingPass, ...] = ()
    wake_at: float | None = None
    priority: Priority | None = None
    real_tokens: int = 0
    padded_tokens: int = 0

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.padded_tokens if self.padded_tokens else 1.0


def form_batch(
    interactive: Sequence[PendingPass],
    bulk: Sequence[PendingPass],
    policy: BatchPolicy,
    state: QueueState,
) -> BatchDecision:
    """Decide the next batch from the two queues (each oldest first)."""
    now = state.now
    expired = tuple(p for p in (*interactive, *bulk) if p.deadline is not None and p.deadline <= now)
    if expired:
        gone = {p.key for p in expired}
        interactive = [p for p in interactive if p.key not in gone]
        bulk = [p for p in bulk if p.key not in gone]

    wake_at: float | None = None
    bulk_starved = False
    if bulk and not state.bulk_in_flight:
        starving_since = max(state.last_bulk_dispatch_at, bulk[0].enqueued_at)
        bulk_starved = now - starving_since >= policy.bulk_starvation_s
    interactive_recent = bool(interactive) or now - state.last_interactive_at < policy.interactive_window_s

    if interactive and not bulk_starved:
        chosen, queue = Priority.INTERACTIVE, interactive
    elif bulk and (bulk_starved or not (state.reserve_for_interactive and interactive_recent)):
        chosen, queue = Priority.BULK, bulk
    else:
        if bulk:  # held back for interactive: look again when the window ends or bulk would starve
            wake_at = state.last_interactive_at + policy.interactive_window_s
            if not state.bulk_in_flight:
                starving_at = max(state.last_bulk_dispatch_at, bulk[0].enqueued_at) + policy.bulk_starvation_s
                wake_at = min(wake_at, starving_at)
        return BatchDecision(expired=expired, wake_at=wake_at)

    budget = policy.max_batch_tokens
    if chosen is Priority.BULK and interactive_recent and not bulk_starved:
        budget = min(budget, policy.bulk_tokens_while_interactive)

    head = queue[0]
    ready_at = head.enqueued_at + policy.max_wait_s
    full = len(queue) >= policy.max_batch_size or _padded(queue) >= budget
    if not (full or state.draining or now >= ready_at or bulk_starved):
        return BatchDecision(expired=expired, wake_at=ready_at)

    batch = group_by_length(queue, head, budget, policy)
    real = sum(p.num_tokens for p in batch)
    padded = max(p.num_tokens for p in batch) * len(batch)
    return BatchDecision(
        batch=batch, expired=expired, priority=chosen, real_tokens=real, padded_tokens=padded
    )


def group_by_length(
    queue: Sequence[PendingPass], seed: PendingPass, budget: int, policy: BatchPolicy
) -> tuple[PendingPass, ...]:
    """Grow a batch around `seed` with the passes nearest in length, within size and token budget.

    The seed (the oldest pass) is always included, so nothing waits forever behind better-fitting
    work. Each step adds whichever length-neighbour keeps real/padded tokens highest, and stops
    when the next one would push the batch below `min_padding_efficiency`.
    """
    order = sorted(queue, key=lambda p: (p.num_tokens, p.key))
    lo = hi = next(i for i, p in enumerate(order) if p.key == seed.key)
    count, real, longest = 1, seed.num_tokens, seed.num_tokens
    while count < policy.max_batch_size:
        best: tuple[float, int] | None = None
        for index in (lo - 1, hi + 1):
            if not 0 <= index < len(order):
                continue
            tokens = order[index].num_tokens
            new_longest = max(longest, tokens)
            if new_longest * (count + 1) > budget:
                continue
            efficiency = (real + tokens) / (new_longest * (count + 1))
            if best is None or efficiency > best[0]:
                best = (efficiency, index)
        if best is None or best[0] < policy.min_padding_efficiency:
            break
        index = best[1]
        if index < lo:
            lo = index
        else:
            hi = index
        count += 1
        real += order[index].num_tokens
        longest = max(longest, order[index].num_tokens)
    return tuple(sorted(order[lo : hi + 1], key=lambda p: p.key))


def _padded(queue: Sequence[PendingPass]) -> int:
    """Padded tokens if the whole queue went in one batch (an upper bound for readiness)."""
    return max(p.num_tokens for p in queue) * len(queue)
