"""The machine line every benchmark prints beside its figures, so a figure is never read against the
wrong machine: CPU model, the instruction-set flags that decide the fast paths (AVX2, AVX-512,
VNNI, BF16, AMX), torch's own CPU capability and threads, and the library versions.

Usage (from a benchmark script, which runs with benchmarks/ on sys.path):
    from machine import print_machine
    print_machine()
"""

from __future__ import annotations

import importlib.metadata


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def machine_line() -> str:
    """CPU model and flags, torch capability/threads, torch / onnxruntime / transformers versions."""
    import torch

    from gliclass_core.devices import cpu_summary

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"machine: {cpu_summary()}; torch CPU capability {torch.backends.cpu.get_cpu_capability()},"
        f" torch threads {torch.get_num_threads()}; GPU: {gpu}; torch {torch.__version__},"
        f" onnxruntime {_version('onnxruntime')}, transformers {_version('transformers')}"
    )


def print_machine() -> str:
    """Print `machine_line()` (flushed, before any figure) and return it for a JSON record."""
    line = machine_line()
    print(line, flush=True)
    return line


if __name__ == "__main__":
    print_machine()
