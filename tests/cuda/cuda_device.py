"""The device the ``cuda``-marked tests run on.

On a GPU machine it is ``cuda``. ``TORCHDOCTOR_CUDA_TESTS_ON=cpu`` runs the device-agnostic
tests on the CPU (a self-check of the tests where no GPU is lent); tests that need the real
device (CUDA events, sync debug mode, measured stalls) call :func:`require_real_cuda`.
"""

from __future__ import annotations

import os

import pytest
import torch

DEVICE = torch.device("cpu" if os.environ.get("TORCHDOCTOR_CUDA_TESTS_ON") == "cpu" else "cuda")


def require_real_cuda() -> None:
    """Skip the calling test unless it runs on a real CUDA device."""
    if DEVICE.type != "cuda" or not torch.cuda.is_available():
        pytest.skip("needs a real CUDA device (not the CPU self-check)")
