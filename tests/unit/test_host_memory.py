"""`retain_freed_memory`: freed blocks are reused instead of being unmapped and faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Allocate, touch and free a 64 MB tensor five times; print the minor page faults it cost.
_PROBE = """
import resource, sys
import torch
from gliclass_core.runtime.host_memory import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "tune" else False
torch.empty(1024).fill_(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    t = torch.empty(16 * 1024 * 1024)
    t.fill_(1.0)
    del t
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(mode: str, **env: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
        env={**os.environ, **env},
    ).stdout.split()  # fmt: skip
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    applied, tuned_faults = _probe("tune")
    assert applied
    _, default_faults = _probe("default")
    pages = 64 * 1024 * 1024 // 4096
    # Default glibc: every 64 MB block is a fresh mmap, so each of the 5 rounds faults all its pages.
    assert default_faults >= 4 * pages
    # Retained: the first round faults the pages in, later rounds reuse them.
    assert tuned_faults <= 2 * pages


def test_opt_out_leaves_the_allocator_alone() -> None:
    applied, _ = _probe("tune", GLICLASS_MALLOC_TUNING="0")
    assert not applied
