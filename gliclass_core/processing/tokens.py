"""Tokenize the pieces of a GLiClass input string so that their concatenation equals the full string's ids.

Added marker tokens (`<<LABEL>>`, `<<SEP>>`, `<<EXAMPLE>>`) split the string before the tokenizer's
normalizer and pre-tokenizer run, so each piece between two markers is tokenized on its own. Some
pre-tokenizers still look at where a piece sits (SentencePiece's "prepend on first piece only",
markers that strip neighbouring whitespace), so a piece is tokenized between the same markers that
surround it in the full string, and those marker ids are dropped again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class LRUCache:
    """A small thread-safe bounded LRU map."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class PieceTokenizer:
    """Tokenizes input pieces in marker context, and knows the tokenizer's own [CLS]/[SEP] wrapping."""

    def __init__(self, tokenizer: Any, markers: dict[str, int], cache_size: int = 4096) -> None:
        self.hf = tokenizer
        # The Rust tokenizer is what the HF wrapper runs; calling it directly skips Python overhead.
        self.backend = _private_backend(tokenizer)
        self.markers = markers  # marker text -> id
        self.marker_text = {v: k for k, v in markers.items()}
        self._cache = LRUCache(cache_size)
        probe = next(iter(markers), None) or "a"
        with_special = self._encode(probe, True)
        bare = self._encode(probe, False)
        self.prefix, self.suffix = _split_wrapping(with_special, bare)

    def _encode(self, text: str, special: bool) -> list[int]:
        if self.backend is not None:
            return list(self.backend.encode(text, add_special_tokens=special).ids)
        return list(self.hf(text, add_special_tokens=special)["input_ids"])

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """Ids of each string without special tokens, in one batch call.

        The Rust tokenizer's `encode_batch` releases the GIL and runs on its own thread pool, so a
        batch costs a fraction of one Python call per text (and other threads keep running).
        """
        if not texts:
            return []
        if self.backend is not None:
            return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]
        return [list(x) for x in self.hf(texts, add_special_tokens=False)["input_ids"]]

    def piece(self, text: str, before: int | None, after: int | None, cache: bool = True) -> tuple[int, ...]:
        """Ids of `text` as it tokenizes between marker ids `before` and `after` (None: string edge)."""
        if not text:
            return ()
        key = (text, before, after)
        if cache:
            hit = self._cache.get(key)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
        left = self.marker_text[before] if before is not None else ""
        right = self.marker_text[after] if after is not None else ""
        ids = self._encode(left + text + right, False)
        start = 1 if before is not None else 0
        end = len(ids) - (1 if after is not None else 0)
        result = tuple(ids[start:end])
        if cache:
            self._cache.put(key, result)
        return result

    def plain(self, text: str, cache: bool = True) -> tuple[int, ...]:
        """Ids of `text` alone with the tokenizer's own special tokens around it (bi-encoder inputs)."""
        return (*self.prefix, *self.piece(text, None, None, cache=cache), *self.suffix)


def _split_wrapping(with_special: list[int], bare: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Find the special ids the tokenizer adds before and after a sequence."""
    n = len(bare)
    for i in range(len(with_special) - n + 1):
        if with_special[i : i + n] == bare:
            return tuple(with_special[:i]), tuple(with_special[i + n :])
    return (), ()


def _private_backend(tokenizer: Any) -> Any:
    """A copy of the Rust tokenizer with padding and truncation off (we pad and truncate ourselves)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    own = Tokenizer.from_str(backend.to_str())
    own.no_padding()
    own.no_truncation()
    return own
