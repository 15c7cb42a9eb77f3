"""Boolean arguments of the ops (``maximize``, ``check``, ``unbiased``, ``bias_correction``).

Read by truthiness, ``maximize="False"`` (a string from a config file or a command line)
maximized and ``check=None`` skipped the checks, silently (oracle round 8). A flag must be a
bool: Python's, NumPy's, or the ints 0 and 1.

Example:
    >>> require_flag(True, "check")
    True
    >>> try:
    ...     require_flag("False", "maximize")
    ... except TypeError as e:
    ...     print(str(e)[:58])
    maximize must be True or False, got 'False' (str); flags a
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["require_flag"]


def require_flag(value: object, name: str) -> bool:
    """``value`` as a Python bool; TypeError naming ``name`` unless it is a bool, a NumPy bool,
    or an int equal to 0 or 1 (never a tensor: reading one on an accelerator would sync)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(
        f"{name} must be True or False, got {value!r} ({type(value).__name__}); flags are not "
        "read by truthiness (the string 'False' is true): pass a Python bool"
    )
