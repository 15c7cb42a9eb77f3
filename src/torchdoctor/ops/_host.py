"""Host views of CPU tensors for the ops' CPU engines (scipy, NumPy).

Reading CPU memory is no host-device synchronization, so the view is taken with torch-function
handling switched off: a sync audit running around the op does not count it. Accelerator
tensors never take this path (their engines are tensor ops, or an explicit, counted copy).

Example:
    >>> import torch
    >>> cpu_array(torch.arange(3.0)).tolist()
    [0.0, 1.0, 2.0]
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["cpu_array", "numpy_ready"]


def numpy_ready(tensor: torch.Tensor) -> bool:
    """True for a float32/float64 CPU tensor (what the NumPy engines accept)."""
    return tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64)


def cpu_array(tensor: torch.Tensor) -> np.ndarray:
    """A zero-copy NumPy view of a CPU tensor (detached; conjugate/negative views resolved)."""
    if tensor.device.type != "cpu":
        raise ValueError(f"cpu_array needs a CPU tensor, got one on {tensor.device}")
    with torch._C.DisableTorchFunction():
        return tensor.detach().resolve_conj().resolve_neg().numpy()
