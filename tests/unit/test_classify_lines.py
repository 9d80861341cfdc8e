"""The classify CLI's line reader: an over-long line is that line's error, read past without keeping it."""

from __future__ import annotations

import io

import pytest

from server.app.commands import classify


def test_an_over_long_line_is_skipped_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classify, "MAX_LINE_CHARS", 10)
    stream = io.StringIO("short\n" + "x" * 10 + "\n" + "y" * 35 + "\n\nlast" + "z" * 6)
    got = list(classify._lines(stream))
    # Exactly the limit fits; 35 characters are refused (read in pieces, never kept); blank lines
    # count; a last line without a newline is judged the same way.
    assert got == [(1, "short\n"), (2, "x" * 10 + "\n"), (3, None), (4, "\n"), (5, "last" + "z" * 6)]
    batches = list(classify._batches(io.StringIO("a\n" + "b" * 11 + "\nc\n"), 8))
    assert batches == [[(1, "a\n"), (2, None), (3, "c\n")]]
