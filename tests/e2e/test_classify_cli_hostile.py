"""`gliclass-stream classify` JSON lines under hostile input: each bad line is a typed error line.

A real process and the builtin model. The stream carries bytes that are not UTF-8, deep nesting,
huge and non-finite numbers, lone surrogates, content-less texts, control characters in labels,
wrong types and non-object lines between good lines: every line gets its output line in place,
good lines are scored, and the process exits 1 (some lines failed) without a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# (stdin line, field named by the error or None when it names none; "ok" when it is scored)
LINES: list[tuple[bytes, str | None]] = [
    (b'{"text": "please refund my payment"}', "ok"),
    (b'\xff\xfe{"text": "not utf-8 \xc3"}', None),
    (b'{"text": "\xed\xa0\x80"}', "text"),  # an encoded lone surrogate
    (b'{"text": "\\ud800"}', "text"),
    (b'{"text": "\\u0000"}', "text"),
    (b'{"text": "\\u200b\\ufeff"}', "text"),
    (b'{"text": "fine", "labels": ["billing", "a\\u0000"]}', "labels"),
    (b'{"text": "fine", "labels": ["billing", "\\udfff"]}', "labels"),
    (b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    (b'{"text": "fine", "threshold": 1' + b"0" * 5000 + b"}", None),
    (b'{"text": "fine", "threshold": NaN}', None),
    (b'{"text": 5}', "text"),
    (b'{"text": "fine", "labels": "billing"}', "labels"),
    (b'{"text": "fine", "labels": [1, 2]}', "labels"),
    (b'{"text": "fine", "prompt": ["x"]}', "prompt"),
    (b'{"text": "fine", "threshold": "high"}', "threshold"),
    (b"[1, 2]", None),
    (b"null", None),
    (b'{"text": "the app crashes on start", "labels": ["bug report", "cooking"]}', "ok"),
]


@pytest.fixture(scope="module")
def cache(builtin_classifier, gliclass_cache: Path) -> Path:
    return gliclass_cache


def test_every_hostile_line_is_a_typed_error_line_in_place(cache: Path) -> None:
    stdin = b"\n".join(line for line, _ in LINES) + b"\n"
    proc = subprocess.run(
        [sys.executable, "-m", "server.app.cli", "classify", "--labels", "billing,bug report"],
        input=stdin,
        capture_output=True,
        env={**os.environ, "GLICLASS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
        timeout=240,
        cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == 1, proc.stderr.decode(errors="replace")[-2000:]
    assert b"Traceback" not in proc.stderr
    out = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert len(out) == len(LINES)
    for number, (result, (line, field)) in enumerate(zip(out, LINES), start=1):
        if field == "ok":
            assert "error" not in result and result["scores"], result
            continue
        assert result["line"] == number and result["reason"] == "invalid_input", result
        assert result.get("field") == field, (line[:60], result)
    assert out[0]["labels"][0] == "billing" and out[-1]["labels"] == ["bug report"]
