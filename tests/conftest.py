"""Test tiers by folder (unit / integration / e2e), and the shared fixture modules."""

from __future__ import annotations

from pathlib import Path

import pytest

# Each area keeps its fixtures in its own module under tests/fixtures/.
pytest_plugins = ["fixtures.models", "fixtures.kafka", "fixtures.grpc", "fixtures.http"]

TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
        if item.get_closest_marker("gpu"):
            import torch

            if not torch.cuda.is_available():
                item.add_marker(pytest.mark.skip(reason="needs CUDA"))
