"""One device/dtype answer for a model copy (`Classifier.from_pretrained`) and for the pool's list."""

from __future__ import annotations

import pytest
import torch

from gliclass_core.devices import dtype_name, resolve_device, resolve_devices, resolve_dtype
from gliclass_core.errors import InvalidInput


@pytest.mark.parametrize("spec", ["auto", "", None, " AUTO "])
def test_auto_for_one_copy_is_the_pools_first_device(spec: str | None) -> None:
    assert resolve_device(spec) == resolve_devices("auto")[0]


def test_names_are_the_pools_names() -> None:
    assert resolve_device("cuda") == "cuda:0"
    assert resolve_device(" CPU ") == resolve_devices(" CPU ")[0] == "cpu"


def test_engine_onnx_runs_on_the_cpu_alone() -> None:
    assert resolve_devices("auto", "onnx") == resolve_devices("cuda:7,cuda:8", "onnx") == ["cpu"]
    assert resolve_devices("cpu", "torch") == ["cpu"]


def test_dtype_spellings() -> None:
    assert dtype_name("torch.Float16") == "float16"
    assert dtype_name("auto") is None and dtype_name(None) is None
    assert resolve_dtype(None, "cpu") is torch.float32
    assert resolve_dtype("bf16", "cuda:0") is torch.bfloat16
    assert resolve_dtype(torch.float16, "cuda:0") is torch.float16  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as err:
        resolve_dtype("float8", "cpu")
    assert err.value.field == "dtype"


def test_a_half_type_runs_on_the_cpu_only_where_the_cpu_has_its_instructions(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Emulated bf16 / fp16 would be slower than float32: float32 runs instead, and a warning says why.

    The CPU's flags are replaced (the one fake here): a test machine has only one CPU, and both
    answers must hold.
    """
    from gliclass_core import devices

    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with caplog.at_level("WARNING", logger="gliclass_core.devices"):
        assert resolve_dtype("bf16", "cpu") is torch.float32
        assert resolve_dtype("fp16", "cpu") is torch.float32
    assert "avx512_bf16" in caplog.text and "running float32 instead" in caplog.text
    assert "avx512_fp16" in caplog.text
    assert resolve_dtype("bf16", "cuda:0") is torch.bfloat16  # a GPU's dtype is torch's business
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert resolve_dtype("fp16", "cpu") is torch.float32
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"amx_tile", "amx_bf16", "amx_fp16"}))
    assert resolve_dtype("bf16", "cpu") is torch.bfloat16
    assert resolve_dtype("fp16", "cpu") is torch.float16
    assert resolve_dtype(None, "cpu") is torch.float32  # the CPU default stays exact float32


def test_this_cpus_flags_decide_bf16() -> None:
    """On the machine running the test: bf16 is what runs exactly where /proc/cpuinfo says it is native."""
    from gliclass_core.devices import cpu_flags, cpu_summary

    native = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    assert (resolve_dtype("bf16", "cpu") is torch.bfloat16) == native
    assert ("bfloat16" in cpu_summary().partition("native half types:")[2]) == native


# (engine, dtype, device, the field it is refused for or None)
ENGINE_CASES = [
    ("torch", None, "cpu", None),
    ("torch", "bf16", "auto", None),
    ("torch", "int8", "cpu", "dtype"),
    ("tvm", None, "cpu", "engine"),
    ("onnx", None, "auto", None),
    ("onnx", "FP32", " CPU ", None),
    ("onnx", "torch.float32", "cpu", None),
    ("onnx", "int8", "cpu", None),
    ("onnx", "bf16", "cpu", "dtype"),
    ("onnx", None, "cuda", "device"),
    ("onnx", "int8", "cuda:1", "device"),
]


@pytest.mark.parametrize(("engine", "dtype", "device", "field"), ENGINE_CASES)
def test_the_config_and_the_loader_refuse_the_same_engine_settings(
    engine: str, dtype: str | None, device: str, field: str | None
) -> None:
    """[model] settings pass parse_config exactly when Classifier.from_pretrained's check takes them."""
    from gliclass_core.config import ConfigError, parse_config
    from gliclass_core.errors import GliclassError
    from gliclass_core.modeling import onnx_engine

    model = {"engine": engine, "device": device} | ({"dtype": dtype} if dtype is not None else {})
    if field is None:
        assert parse_config({"model": model}).model.engine == engine
        try:
            onnx_engine.resolve_engine(engine, dtype, device)
        except GliclassError as exc:
            assert "onnxruntime" in str(exc)  # only the optional package may be missing
        return
    with pytest.raises(ConfigError, match=rf"^\[model\] .*\b{field}\b") as config_error:
        parse_config({"model": model})
    with pytest.raises(GliclassError) as load_error:
        onnx_engine.resolve_engine(engine, dtype, device)
    assert config_error.value.args[0].removeprefix("[model] ") in str(load_error.value)
    assert getattr(load_error.value, "field", "device") == field
