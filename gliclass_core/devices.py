"""Device and dtype names: the one place that turns "auto", "cuda", "fp16"... into what torch runs on,
and says which engine takes which (`engine_problem`: the config and the loader ask it).

`resolve_device` (one model copy, `Classifier.from_pretrained`) and `resolve_devices` (the pool's
device list, `[model] device`) give the same answer for the same spec: "auto" is every visible GPU
(the first one for a single copy), else the CPU; "cuda" is "cuda:0".
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from gliclass_core.errors import ConfigError, InvalidInput

log = logging.getLogger(__name__)

# Accepted dtype spellings -> torch attribute names.
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}  # fmt: skip
ENGINES = ("torch", "onnx")
# engine "onnx" (CPU only): accepted dtype spellings -> the dtype of its export.
ONNX_DTYPES = {"float32": "float32", "fp32": "float32", "int8": "int8"}
# CPU instruction-set flags (as /proc/cpuinfo spells them) that run each half type natively; without
# one of them torch emulates the type and runs it several times slower than float32.
NATIVE_HALF = {"bfloat16": ("avx512_bf16", "amx_bf16"), "float16": ("avx512_fp16", "amx_fp16")}
# The flags benchmarks print beside their figures and that decide the CPU's fast paths.
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                         "amx_int8", "amx_bf16", "amx_fp16")  # fmt: skip


def _canonical(name: str) -> str:
    return "cuda:0" if name == "cuda" else name


def resolve_devices(spec: str, engine: str = "torch") -> list[str]:
    """Turn `auto`, `cpu`, `cuda`, or a list like `cuda:0,cuda:1` into device names.

    `auto` means every visible GPU, else the CPU. Engine "onnx" runs on the CPU alone (whatever
    `spec` says; `engine_problem` refuses a GPU). Raises ConfigError for unknown or absent devices.
    """
    import torch

    if engine == "onnx":
        spec = "cpu"

    names = [part.strip().lower() for part in spec.split(",") if part.strip()]
    if not names:
        raise ConfigError("[model] device must not be empty")
    if names == ["auto"]:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]
    devices: list[str] = []
    for name in names:
        if name == "cpu":
            devices.append("cpu")
            continue
        name = _canonical(name)
        kind, _, index = name.partition(":")
        if kind != "cuda" or not index.isdigit():
            raise ConfigError(f"[model] device '{name}' is not 'auto', 'cpu' or 'cuda:N'")
        if not torch.cuda.is_available() or int(index) >= torch.cuda.device_count():
            raise ConfigError(f"[model] device '{name}' is not available on this machine")
        devices.append(name)
    if len(set(devices)) != len(devices):
        raise ConfigError("[model] device lists a device twice; use replicas_per_device instead")
    return devices


def resolve_device(device: str | None) -> str:
    """The device one model copy runs on: "auto" (or empty) is the first of `resolve_devices("auto")`.

    Other names pass through to torch (lower-cased, "cuda" as "cuda:0"), which rejects what it cannot use.
    """
    name = str(device or "auto").strip().lower()
    if name == "auto":
        return resolve_devices("auto")[0]
    return _canonical(name)


def dtype_name(dtype: object) -> str | None:
    """A dtype spec as a lower-case name without "torch." ("torch.float16" -> "float16"); None for auto."""
    if dtype in (None, "", "auto"):
        return None
    return str(dtype).lower().removeprefix("torch.")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's instruction-set flags: /proc/cpuinfo's, else what torch's own probes report."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    import torch

    probes = {"avx2": "_is_avx2_supported", "avx512f": "_is_avx512_supported",
              "avx512_vnni": "_is_vnni_supported", "avx512_bf16": "_is_avx512_bf16_supported",
              "amx_tile": "_is_amx_tile_supported", "amx_fp16": "_is_amx_fp16_supported"}  # fmt: skip
    found = set()
    for flag, probe in probes.items():
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            found.add(flag)
    return frozenset(found)


def cpu_half_problem(name: str) -> str | None:
    """Why the CPU would emulate torch dtype `name` ("bfloat16", "float16"); None when it runs natively."""
    needs = NATIVE_HALF.get(name)
    if needs is None or any(flag in cpu_flags() for flag in needs):
        return None
    return (
        f"this CPU has no {' / '.join(needs)}, so torch emulates {name} there"
        " (several times slower than float32)"
    )


def resolve_dtype(dtype: str | None, device: str) -> Any:
    """The torch dtype for `dtype` on `device`: auto is bf16 (fp16 without bf16) on CUDA, fp32 on CPU.

    On a CPU a half type runs only where the CPU has the instructions for it (`NATIVE_HALF`): elsewhere
    torch would emulate it, slower than float32 and less exact, so float32 runs instead and a warning
    says why (the model's info then names float32). Raises InvalidInput naming `dtype` for an
    unknown spelling.
    """
    import torch

    wanted = dtype_name(dtype)
    if wanted is None:
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    name = DTYPES.get(wanted)
    if name is None:
        raise InvalidInput(f"unknown dtype {dtype!r} (float32, float16, bfloat16)", field="dtype")
    problem = cpu_half_problem(name) if device.startswith("cpu") else None
    if problem is not None:
        log.warning("dtype %s on the CPU: %s; running float32 instead", name, problem)
        return torch.float32
    return getattr(torch, name)


def engine_problem(engine: str, dtype: object, device: str | None) -> tuple[str, str] | None:
    """What keeps `engine` from running `dtype` on `device`, as (field, message); None when they fit.

    `engine` is taken as spelled; `dtype` as `dtype_name` reads it; `device` as `resolve_device`
    does ("auto" under engine "onnx" is the CPU, whatever GPUs the machine has). Unknown torch
    dtypes are left to `resolve_dtype`. The message names the field.
    """
    if engine not in ENGINES:
        return "engine", f'engine must be "torch" or "onnx", not {engine!r}'
    wanted = dtype_name(dtype)
    if engine == "torch":
        if wanted == "int8":
            return "dtype", 'dtype "int8" needs engine = "onnx"'
        return None
    if wanted is not None and wanted not in ONNX_DTYPES:
        return "dtype", f'engine "onnx" takes dtype float32 or int8, not {dtype!r}'
    name = str(device or "auto").strip().lower()
    if name != "auto" and not _canonical(name).startswith("cpu"):
        return "device", f'engine "onnx" runs on CPU only: device must be "cpu" or "auto", not {device!r}'
    return None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo's "model name", else the platform's answer)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_summary() -> str:
    """One line naming the CPU, its cores and which of `CPU_FLAGS_OF_INTEREST` it has and lacks."""
    import os

    flags = cpu_flags()
    has = [f for f in CPU_FLAGS_OF_INTEREST if f in flags]
    lacks = [f for f in CPU_FLAGS_OF_INTEREST if f not in flags]
    native = [name for name in NATIVE_HALF if cpu_half_problem(name) is None]
    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs; flags: {' '.join(has) or 'none'}"
        f" (lacks {' '.join(lacks) or 'none'}); native half types: {', '.join(native) or 'none'}"
    )
