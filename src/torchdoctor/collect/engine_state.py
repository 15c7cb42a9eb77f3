"""What the engine is set to while the user's code runs: the knobs read at run time, and the
settings of the DataLoaders it iterates.

The profiler records them in ``environment.knobs`` (the advice does not prescribe a knob in
use), and ``torchdoctor tune`` skips a trial of a knob the script already turns on. One home
for each reading, so both agree.

Example:
    >>> import torch
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     autocast_dtype()
    'bfloat16'
"""

from __future__ import annotations

from typing import Any

import torch


def autocast_dtype(device_type: str | None = None) -> str | None:
    """The dtype autocast runs in right now ("bfloat16", "float16") on ``device_type`` (default:
    CUDA, then CPU); None when it is off (or the device type is unknown to torch).

    Example:
        >>> autocast_dtype("cpu") is None
        True
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     autocast_dtype("cpu"), autocast_dtype("cuda")
        ('bfloat16', None)
    """
    for device in (device_type,) if device_type else ("cuda", "cpu"):
        try:
            if torch.is_autocast_enabled(device):
                return str(torch.get_autocast_dtype(device)).replace("torch.", "")
        except (RuntimeError, TypeError, AttributeError):  # an unknown device type
            continue
    return None


def channels_last_input(args: Any) -> bool | None:
    """Whether a convolution's 4-D input is stored channels_last (None: no 4-D tensor input).

    Example:
        >>> x = torch.zeros(1, 3, 4, 4)
        >>> channels_last_input((x,)), channels_last_input((x.to(memory_format=torch.channels_last),))
        (False, True)
    """
    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if x is None or x.dim() != 4:
        return None
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def loader_settings(iterator: Any) -> dict[str, Any]:
    """A DataLoader iterator's ``num_workers``, ``persistent_workers`` and ``pin_memory``.

    Example:
        >>> loader = torch.utils.data.DataLoader([1, 2], num_workers=0)
        >>> loader_settings(iter(loader))
        {'num_workers': 0, 'persistent_workers': False, 'pin_memory': False}
    """
    return {
        "num_workers": int(getattr(iterator, "_num_workers", 0) or 0),
        "persistent_workers": bool(getattr(iterator, "_persistent_workers", False)),
        "pin_memory": bool(getattr(iterator, "_pin_memory", False)),
    }
