"""A hot line whose time is weight initialisation: modules built at every step.

``build()`` or ``nn.Linear(...)`` in the step (an inference loop that rebuilds its model, a
``forward`` that makes a layer per call: lint TD513) spends its time in the initialisers
(``kaiming_uniform_``, ``uniform_``, ``normal_``, ``trunc_normal_``, ``xavier_*``), which the
hot lines time as the line's top ops. When they are half of the line or more, the cure is to
build the module once; the saving is their measured time.

Example:
    >>> row = {"total_ms": {"median": 2.3}, "top_ops": [
    ...     {"op": "torch.kaiming_uniform_", "forward_ms": 2.17, "calls_per_step": 3}]}
    >>> round(build_once_cure(row).speedup.low, 1)
    17.7
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Speedup, center
from torchdoctor.analyze.advice.cure import Cure, removing_share

#: top ops that initialise weights (torch.nn.init's functions and the tensor methods they call)
_INITIALISERS = re.compile(
    r"(^|\.)(kaiming_(uniform|normal)_|xavier_(uniform|normal)_|trunc_normal_|orthogonal_|"
    r"uniform_|normal_)$"
)
#: the share of the line the initialisers need before they are the cause
MIN_SHARE = 0.5

BUILD_ONCE = Cure(
    "build the module once",
    "modules built at every step: build them once",
    "Its time is weight initialisation (kaiming_uniform_, uniform_, ...): a module is built at "
    "every step (a model rebuilt in an inference loop, a layer made in forward: lint TD513). "
    "Build it once, before the loop or in __init__, and reuse it; a layer made in forward is "
    "also never trained (new random weights at each call).",
    Speedup(1.0, 1.0, "set per line from the initialisers' measured share"),
    ("TD513",),
    "for x in inputs:            # before\n    model = build()\n    y = model(x)\n"
    "model = build()             # after\nfor x in inputs:\n    y = model(x)",
    basis="measured",
)


def build_once_cure(row: Mapping[str, Any]) -> Cure | None:
    """:data:`BUILD_ONCE` with the speedup of removing the line's initialisers (their measured
    share of it), when they are :data:`MIN_SHARE` of it or more; else None.

    Example:
        >>> build_once_cure({"total_ms": {"median": 2.0}, "top_ops": [
        ...     {"op": "torch.mm", "forward_ms": 1.9}]}) is None
        True
    """
    total = center(row.get("total_ms"))
    spent = sum(
        float(op.get("forward_ms") or 0.0)
        for op in row.get("top_ops") or ()
        if _INITIALISERS.search(str(op.get("op") or ""))
    )
    if total <= 0 or spent < MIN_SHARE * total:
        return None
    share = min(0.95, spent / total)
    return removing_share(
        BUILD_ONCE,
        share,
        f"the line's weight initialisers, measured: {share:.0%} of its time (built once, they "
        "run once)",
    )
