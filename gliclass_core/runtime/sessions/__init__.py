"""Streaming sessions for decoder-kv models: chunks extend a cached text, scored by strategy."""

from __future__ import annotations

from gliclass_core.runtime.sessions.store import SessionLimits, SessionStats, SessionStore, SessionUpdate
from gliclass_core.runtime.sessions.strategies import (
    Strategy,
    composed,
    every_chunk,
    every_n_tokens,
    never,
    on_delimiter,
    parse_strategy,
    sliding_window,
)

__all__ = [
    "SessionLimits",
    "SessionStats",
    "SessionStore",
    "SessionUpdate",
    "Strategy",
    "composed",
    "every_chunk",
    "every_n_tokens",
    "never",
    "on_delimiter",
    "parse_strategy",
    "sliding_window",
]
