"""Per-partition bookkeeping: output order and which input offsets are safe to commit.

Pure data structures driven by the worker loop (one thread); no Kafka client here.

- `OrderedLane` keeps a partition's records in input order and releases a prefix of the ones
  whose result is ready, so outputs are produced in input order.
- `OffsetTracker` records every consumed offset and which are acknowledged (output or dead letter
  acked by the broker, or written in the open transaction); the commit position of a partition is
  one past the longest acknowledged prefix, so a commit never skips an unfinished record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

TopicPartition = tuple[str, int]
T = TypeVar("T")


class OrderedLane(Generic[T]):
    """Records of one partition in input order; `pop_ready` releases the ready prefix."""

    def __init__(self) -> None:
        self._slots: deque[T] = deque()

    def push(self, slot: T) -> None:
        self._slots.append(slot)

    def requeue(self, slots: list[T]) -> None:
        """Put already released slots back at the front, in the given (input) order."""
        self._slots.extendleft(reversed(slots))

    def peek(self) -> T:
        """Return the oldest slot (the lane must not be empty)."""
        return self._slots[0]

    def pop(self) -> T:
        """Remove and return the oldest slot."""
        return self._slots.popleft()

    def pop_ready(self, is_ready: Callable[[T], bool]) -> Iterator[T]:
        """Yield and remove slots from the front while they are ready."""
        while self._slots and is_ready(self._slots[0]):
            yield self._slots.popleft()

    def drain(self) -> list[T]:
        """Remove and return every slot (for abandoning a partition)."""
        slots = list(self._slots)
        self._slots.clear()
        return slots

    def __len__(self) -> int:
        return len(self._slots)


@dataclass
class _Offsets:
    pending: deque[int] = field(default_factory=deque)
    acked: set[int] = field(default_factory=set)
    position: int | None = None  # next offset to commit (one past the acked prefix)
    committed: int | None = None


class OffsetTracker:
    """Contiguous acknowledged offsets per partition."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Offsets] = {}

    def track(self, tp: TopicPartition, offset: int) -> None:
        """Record a consumed offset (offsets of one partition arrive in increasing order)."""
        part = self._parts.setdefault(tp, _Offsets())
        if part.pending and offset <= part.pending[-1]:
            raise ValueError(f"{tp}: offset {offset} tracked after {part.pending[-1]}")
        part.pending.append(offset)

    def ack(self, tp: TopicPartition, offset: int) -> None:
        """Mark an offset's output as acknowledged; advance the partition's commit position."""
        part = self._parts.get(tp)
        if part is None:
            return  # the partition was revoked or lost meanwhile: nothing to commit for it
        if not part.pending or offset < part.pending[0]:
            return  # already behind the commit position (a re-sent record acknowledged again)
        part.acked.add(offset)
        while part.pending and part.pending[0] in part.acked:
            done = part.pending.popleft()
            part.acked.discard(done)
            part.position = done + 1

    def committable(self) -> dict[TopicPartition, int]:
        """Return partitions whose commit position moved since it was last marked committed."""
        return {
            tp: p.position
            for tp, p in self._parts.items()
            if p.position is not None and p.position != p.committed
        }

    def positions(self, tps: list[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Return the current commit position of each given (or every) partition that has one."""
        keys = self._parts if tps is None else [tp for tp in tps if tp in self._parts]
        return {tp: pos for tp in keys if (pos := self._parts[tp].position) is not None}

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._parts:
                self._parts[tp].committed = offset

    def unacked(self, tp: TopicPartition | None = None) -> int:
        """Count consumed offsets not yet acknowledged (of one partition, or all)."""
        if tp is not None:
            part = self._parts.get(tp)
            return len(part.pending) if part else 0
        return sum(len(p.pending) for p in self._parts.values())

    def drop(self, tp: TopicPartition) -> None:
        """Forget a partition (revoked, lost, or rewound)."""
        self._parts.pop(tp, None)

    def partitions(self) -> list[TopicPartition]:
        return list(self._parts)
