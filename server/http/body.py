"""Request bodies → decoded messages and resolver requests, without stalling the event loop.

Every body is bounded before it is parsed: its size (the aiohttp limit, `max_message_bytes`), then
a vectorised pre-scan (`bounded_json.shape`) that counts items and values, so a body of a million
`{}` is refused before `json.loads` or protobuf's JSON parser builds a million objects. Bodies over
INLINE_BYTES are scanned and parsed in a worker thread. NDJSON is framed in linear time
(`NdjsonFramer`): each byte is looked at a bounded number of times, blank runs are skipped in
one C-level scan, and the reader yields to the loop between lines.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.bounded_json import shape
from gliclass_core.service import ItemRequest, RequestLimits
from server.http.errors import invalid_json
from server.proto import classifier_pb2 as pb
from server.wire.convert import request_from_proto

#: Bodies up to this size are decoded on the loop (well under a millisecond); larger ones in a thread.
INLINE_BYTES = 64 * 1024
#: Documents over this size are pre-scanned before they are parsed.
SCAN_BYTES = 4096
#: JSON nesting the parser is allowed (protobuf's JSON parser recurses per level).
MAX_DEPTH = 16
#: Values an item may carry besides its labels and thresholds (fields, label-tree nodes).
VALUES_PER_ITEM = 64

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Decoded:
    """A parsed request: the message (its items keep their ids for the answer) and their requests."""

    items: Sequence[pb.Item]
    requests: list[ItemRequest]


def max_values(limits: RequestLimits) -> int:
    """The most JSON values a valid message of `limits` can hold (labels and thresholds per item)."""
    return limits.max_items_per_request * (2 * limits.max_labels_per_item + VALUES_PER_ITEM)


def decode(raw: bytes, message: M, limits: RequestLimits, where: str = "") -> Decoded:
    """Pre-scan, parse and decode one JSON document holding `items`; InvalidInput names the field."""
    if len(raw) > SCAN_BYTES:  # smaller documents cannot hold enough to matter: json.loads is quick
        _prescan(raw, limits, where)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{where}not valid JSON: {exc}", field="body") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}must be a JSON object", field="body")
    items = value.get("items")
    if isinstance(items, list) and len(items) > limits.max_items_per_request:
        raise InvalidInput(
            f"{where}{len(items)} items in one message, the limit is {limits.max_items_per_request}",
            field="items",
        )
    try:
        json_format.ParseDict(value, message, max_recursion_depth=MAX_DEPTH)
    except (json_format.ParseError, ValueError, RecursionError) as exc:
        error = invalid_json(exc)
        raise InvalidInput(f"{where}{error.bare_message}", field=error.field) from None
    parsed: Any = message
    return Decoded(parsed.items, [request_from_proto(item) for item in parsed.items])


def _prescan(raw: bytes, limits: RequestLimits, where: str) -> None:
    """Refuse what the parser would spend long on: deep nesting, too many items or values."""
    found = shape(raw)
    if found.depth > MAX_DEPTH:
        raise InvalidInput(f"{where}JSON nested {found.depth} levels deep, at most {MAX_DEPTH}", field="body")
    items = found.objects_at[2]  # {"items": [{...}, ...]}: the item objects open at depth 3
    if items > limits.max_items_per_request:
        raise InvalidInput(
            f"{where}{items} items in one message, the limit is {limits.max_items_per_request}", field="items"
        )
    if found.values > max_values(limits):
        raise InvalidInput(
            f"{where}{found.values} JSON values, more than a valid message holds", field="body"
        )


async def decode_async(raw: bytes, message: M, limits: RequestLimits, where: str = "") -> Decoded:
    """`decode`, in a worker thread for a body over INLINE_BYTES (numpy releases the GIL meanwhile)."""
    if len(raw) <= INLINE_BYTES:
        return decode(raw, message, limits, where)
    return await asyncio.to_thread(decode, raw, message, limits, where)


_BLANK = re.compile(rb"[ \t\r\n]*")


class NdjsonFramer:
    """Split a byte stream into lines in linear time; blank lines are skipped, lines are bounded."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.number = 0  # lines seen so far (blank ones included), for error messages
        self._buffer = bytearray()
        self._scanned = 0  # no newline in _buffer[:_scanned]

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        """Take `chunk`; return the complete non-blank lines it finished, with their line numbers."""
        self._buffer += chunk
        lines: list[tuple[int, bytes]] = []
        buffer = self._buffer
        start = 0
        while True:
            skipped = _BLANK.match(buffer, start)
            assert skipped is not None  # matches the empty string at worst
            blank = buffer[start : skipped.end()]
            self.number += blank.count(b"\n")
            start = skipped.end()
            end = buffer.find(b"\n", max(start, self._scanned))
            if end < 0:
                break
            self.number += 1
            self._check(end - start, self.number)
            lines.append((self.number, bytes(buffer[start:end])))
            start = end + 1
        del buffer[:start]
        self._scanned = len(buffer)
        self._check(len(buffer), self.number + 1)
        return lines

    def close(self) -> bytes | None:
        """The last line if the stream did not end with a newline (None when blank)."""
        rest = bytes(self._buffer).strip()
        self._buffer.clear()
        if not rest:
            return None
        self.number += 1
        return rest

    def _check(self, size: int, number: int) -> None:
        if size > self.max_line_bytes:
            raise InvalidInput(f"line {number} is longer than {self.max_line_bytes} bytes", field="body")
