"""Rule ``anomaly-detection``: autograd anomaly detection left on while training.

``torch.autograd.set_detect_anomaly(True)`` (or ``detect_anomaly()``) records the Python stack
of every autograd node made in forward, so that an error in backward can name the forward line,
and checks every gradient for NaN in backward. Both are per autograd node, and the stack
capture walks every frame, so a deep training loop pays tens of microseconds per op: on a small
MLP it doubles the step. The profiler sees it on at the outermost module calls of its detailed
steps and measures the cost per node at the stack depth the model's forwards run at
(``collect/engine_state.py``: a probe chain, forward and backward, with it on and off); the
saving is that cost times the autograd nodes the steps made. Gradient NaN checks on large
tensors come on top (the probe's tensors are tiny), so the estimate is a lower bound.

Example:
    >>> session = {"anomaly_detection": {"stack_depth": 30, "us_per_node": 60.0,
    ...            "nodes_per_step": 200.0, "ms_per_step": 12.0}, "step_ms": {"mean": 30.0}}
    >>> [(a.rule, round(a.estimated_saving_ms, 1)) for a in anomaly_detection(session)]
    [('anomaly-detection', 12.0)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms
from torchdoctor.session_read import step_ms

#: the estimate's share of the step above which it is advised (it is always a waste in training)
MIN_SHARE = 0.01
#: the estimate never claims more than this share of the step (the step also does real work)
MAX_SHARE = 0.9


def anomaly_detection(session: Mapping[str, Any]) -> list[Advice]:
    """Advice when anomaly detection was on during the profiled steps.

    Example:
        >>> anomaly_detection({})  # (a session without the evidence this rule reads)
        []
    """
    info = session.get("anomaly_detection")
    if not isinstance(info, Mapping):
        return []
    step = step_ms(session)
    cost = float(info.get("ms_per_step") or 0.0)
    if step <= 0 or cost < MIN_SHARE * step:
        return []
    saving = min(cost, MAX_SHARE * step)
    nodes = float(info.get("nodes_per_step") or 0.0)
    return [
        Advice(
            rule="anomaly-detection",
            title="Turn off autograd anomaly detection: it costs at least "
            f"{fmt_ms(saving)} per step",
            estimated_saving_ms=saving,
            saving_range_ms=[saving, min(2 * saving, MAX_SHARE * step)],
            confidence="medium",
            evidence=[
                "torch.autograd.set_detect_anomaly / detect_anomaly was on at the model's "
                "calls: every autograd node records the Python stack it was made at, and "
                "backward checks every gradient for NaN",
                f"{nodes:.0f} autograd nodes per step x {float(info.get('us_per_node') or 0):.1f}"
                f" us each, measured here at the stack depth the forwards run at "
                f"({int(info.get('stack_depth') or 0)} frames) with it on and off; NaN checks "
                "of large gradients come on top",
            ],
            fix="Remove the call, or enable it only while hunting a NaN: "
            "torch.autograd.set_detect_anomaly(args.debug), or wrap just the failing steps in "
            "`with torch.autograd.detect_anomaly():`.",
            references=["torch.autograd.set_detect_anomaly", "torch.autograd.detect_anomaly"],
            code="torch.autograd.set_detect_anomaly(True)        # before: every step pays\n"
            "torch.autograd.set_detect_anomaly(args.debug)  # after: only when debugging",
            heat=min(1.0, saving / step),
            cause="anomaly-detection",
        )
    ]
