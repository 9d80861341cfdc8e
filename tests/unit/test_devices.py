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


def test_dtype_spellings() -> None:
    assert dtype_name("torch.Float16") == "float16"
    assert dtype_name("auto") is None and dtype_name(None) is None
    assert resolve_dtype(None, "cpu") is torch.float32
    assert resolve_dtype("bf16", "cpu") is torch.bfloat16
    assert resolve_dtype(torch.float16, "cpu") is torch.float16  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as err:
        resolve_dtype("float8", "cpu")
    assert err.value.field == "dtype"
