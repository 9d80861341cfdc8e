"""`retain_freed_memory`: freed blocks are reused instead of being unmapped and faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROUNDS = 8
PAGES = 64 * 1024 * 1024 // 4096

# Allocate, touch and free a 64 MB tensor ROUNDS times; print the minor page faults of each round.
_PROBE = f"""
import json, resource, sys
import torch
from gliclass_core.runtime.host_memory import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "tune" else False
torch.empty(1024).fill_(1)
faults = []
for _ in range({ROUNDS}):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 1024 * 1024)
    t.fill_(1.0)
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps([applied, faults]))
"""


def _probe(mode: str, **env: str) -> tuple[bool, list[int]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
        env={**os.environ, **env},
    ).stdout  # fmt: skip
    applied, faults = json.loads(out)
    return applied, faults


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    applied, tuned = _probe("tune")
    assert applied
    _, default = _probe("default")
    # The first round faults the block in either way; compare the rounds after it. Under tuning an
    # early round often faults its block in once more (12 of 20 runs here had one such round; the
    # old assertion on the total failed when two did), so the tuned run is judged by its best round
    # and the default by its worst: each round is all-or-nothing, far from the other.
    # Default glibc: a 64 MB block is always a fresh mmap (above the 32 MB dynamic threshold cap),
    # so no round can avoid faulting all its pages in.
    assert min(default[1:]) >= 0.9 * PAGES, default
    # Retained: later rounds reuse the freed block, so at least one round barely faults at all.
    assert min(tuned[1:]) <= PAGES // 8, tuned


def test_opt_out_leaves_the_allocator_alone() -> None:
    applied, _ = _probe("tune", GLICLASS_MALLOC_TUNING="0")
    assert not applied
