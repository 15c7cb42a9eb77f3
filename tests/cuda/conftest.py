"""The ``device`` fixture of the cuda-marked tests (see cuda_device.py)."""

from __future__ import annotations

import pytest
import torch
from cuda_device import DEVICE


@pytest.fixture
def device() -> torch.device:
    return DEVICE
