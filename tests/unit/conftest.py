"""Fixtures of the unit tests (their tiny models live in ``support/toy_models.py``)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same random state, so thresholds are reproducible."""
    torch.manual_seed(0)
