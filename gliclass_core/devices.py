"""Device and dtype names: the one place that turns "auto", "cuda", "fp16"... into what torch runs on,
and says which engine takes which (`engine_problem`: the config and the loader ask it).

`resolve_device` (one model copy, `Classifier.from_pretrained`) and `resolve_devices` (the pool's
device list, `[model] device`) give the same answer for the same spec: "auto" is every visible GPU
(the first one for a single copy), else the CPU; "cuda" is "cuda:0".
"""

from __future__ import annotations

from typing import Any

from gliclass_core.errors import ConfigError, InvalidInput

# Accepted dtype spellings -> torch attribute names.
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}  # fmt: skip
ENGINES = ("torch", "onnx")
# engine "onnx" (CPU only): accepted dtype spellings -> the dtype of its export.
ONNX_DTYPES = {"float32": "float32", "fp32": "float32", "int8": "int8"}


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


def resolve_dtype(dtype: str | None, device: str) -> Any:
    """The torch dtype for `dtype` on `device`: auto is bf16 (fp16 without bf16) on CUDA, fp32 on CPU.

    Raises InvalidInput naming `dtype` for an unknown spelling.
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
