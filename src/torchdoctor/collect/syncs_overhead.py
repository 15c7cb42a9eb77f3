"""Estimate the sync audit's own overhead in a run: intercepted calls x calibrated cost per call.

Timing every intercepted call would itself cost more than the audit. Instead the audit counts
the calls its modes handled, and this module measures once per process what one call costs
(tiny ops timed with and without a fresh audit, alternating, fastest round of each). The estimate
is ``calls x cost`` and, as a percentage, relative to the audited wall time minus itself. The
calibration loop mixes C-level and Python-level torch calls, so the estimate is rough (within
a factor of about two on the benchmarks); it tells "negligible" from "dominant". The
benchmark ``torchdoctor bench syncs`` measures the real overhead on whole training steps.

Example:
    >>> from torchdoctor.collect.syncs_overhead import estimate_overhead
    >>> estimate_overhead(0, 0, 10.0)["overhead_ms"]
    0.0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from torchdoctor.collect.calibration_cache import recall, remember
from torchdoctor.collect.state import STATE

_cost_us: dict[str, float] = {}
_CALLS = 600
_ROUNDS = 7


def _loop(x: torch.Tensor) -> int:
    """Half C-level torch calls, half Python-level ones (``torch.nn.functional`` wrappers take
    torch's slower Python ``handle_torch_function`` path), like a model's forward."""
    relu = torch.nn.functional.relu
    start = time.perf_counter_ns()
    for _ in range(_CALLS // 2):
        torch.neg(x)
        relu(x)
    return time.perf_counter_ns() - start


def _known(level: str) -> float | None:
    """The cost at ``level`` measured in this process, or kept by another run on this machine
    (``collect/calibration_cache.py``); None when neither."""
    if level not in _cost_us:
        kept = recall(f"sync_audit_{level}")
        if isinstance(kept, float):
            _cost_us[level] = kept
    return _cost_us.get(level)


def per_call_cost_us(level: str, make_audit: Callable[..., Any]) -> float:
    """Microseconds one intercepted call costs at ``level`` ('function' or 'dispatch').

    Measured once per process: the same loop with and without a fresh audit
    (``make_audit(thorough=..., predict=True)``, the ``SyncAudit`` class), in alternation;
    the fastest round of each is kept (other processes only ever add time).

    Example:
        >>> from torchdoctor.collect.syncs import SyncAudit
        >>> per_call_cost_us("function", SyncAudit) >= 0.0
        True
    """
    if level not in ("function", "dispatch"):
        raise ValueError(f"level must be 'function' or 'dispatch', got {level!r}")
    cached = _known(level)
    if cached is not None:
        return cached
    if STATE.profiler is not None:
        # a checkpoint while the run goes on (inside the user's optimizer hooks): calibrating
        # now would install an audit's hooks there; 0 until the run ends and it can calibrate
        return 0.0
    function_cost = 0.0 if level == "function" else per_call_cost_us("function", make_audit)
    x = torch.zeros(1)
    plain, audited, calls = [], [], (0, 0)
    for _ in range(_ROUNDS):
        plain.append(_loop(x))
        audit = make_audit(thorough=level == "dispatch", predict=True)
        with audit:
            audited.append(_loop(x))
        calls = (audit.function_calls, audit.dispatch_calls)
    extra_us = (min(audited) - min(plain)) / 1e3
    if level == "function":
        cost = max(0.0, extra_us / max(calls[0], 1))
    else:
        cost = max(0.0, (extra_us - calls[0] * function_cost) / max(calls[1], 1))
    _cost_us[level] = cost
    remember(f"sync_audit_{level}", cost)
    return cost


def estimate_overhead(
    function_calls: int,
    dispatch_calls: int,
    audited_ms: float,
    make_audit: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """``{"overhead_ms", "overhead_pct", "method"}`` for an audit that handled these calls
    (``make_audit``: the audit class to calibrate with, needed when any call was handled).

    Example:
        >>> from torchdoctor.collect.syncs import SyncAudit
        >>> cost = estimate_overhead(100, 0, 50.0, SyncAudit)
        >>> cost["method"].startswith("estimated: 100 function-level calls x")
        True
        >>> estimate_overhead(0, 0, 10.0)["method"]
        'no intercepted calls'
    """
    if function_calls == 0 and dispatch_calls == 0 or make_audit is None:
        return {"overhead_ms": 0.0, "overhead_pct": 0.0, "method": "no intercepted calls"}
    needed = [
        level for level, n in (("function", function_calls), ("dispatch", dispatch_calls)) if n
    ]
    if STATE.profiler is not None and any(_known(level) is None for level in needed):
        # a checkpoint while the run goes on: calibrating now would run inside the user's run
        return {"overhead_ms": 0.0, "overhead_pct": None,
                "method": "not estimated yet (calibrated when the run ends)"}  # fmt: skip
    function_cost = per_call_cost_us("function", make_audit) if function_calls else 0.0
    dispatch_cost = per_call_cost_us("dispatch", make_audit) if dispatch_calls else 0.0
    overhead_ms = (function_calls * function_cost + dispatch_calls * dispatch_cost) / 1e3
    # The audited time includes the overhead; an estimate above it (noise) is capped there.
    overhead_ms = min(overhead_ms, 0.95 * audited_ms)
    base = audited_ms - overhead_ms
    pct = 100.0 * overhead_ms / base if base > 0 else None
    method = f"estimated: {function_calls} function-level calls x {function_cost:.2f} us" + (
        f" + {dispatch_calls} aten-level calls x {dispatch_cost:.2f} us" if dispatch_calls else ""
    )
    return {"overhead_ms": overhead_ms, "overhead_pct": pct, "method": method}
