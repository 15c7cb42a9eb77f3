"""Rule ``float64-training``: the model trains in double precision.

Each optimizer's settings are noted at its first step with the dtype most of its parameters'
elements have (``environment["optimizers"][i]["dtype"]``: ``collect/engine_state``). A model
whose optimizer steps float64 parameters computes its forward, backward and update in float64
(pytorch/examples' time_sequence_prediction: ``seq.double()``). Few models need it; on a CPU
float32 is measured 1.44x (a loop of LSTMCells) to 2.23x (an MLP forward + backward) faster
here (``SPEEDUPS["float32"]``), and most GPUs run float64 at 1/32 to 1/64 of float32's rate
(no saving stated on CUDA: it depends on the card). The saving is Amdahl over the forward,
backward and optimizer phases.

Example:
    >>> session = {"step_ms": {"mean": 100.0}, "phases": {"forward": {"mean": 30.0},
    ...            "backward": {"mean": 50.0}, "optimizer": {"mean": 10.0}},
    ...            "environment": {"device": "cpu", "optimizers": [{"type": "LBFGS",
    ...                "dtype": "float64", "numel": 10_000}]}}
    >>> [(a.rule, round(a.estimated_saving_ms, 1)) for a in float64_training(session)]
    [('float64-training', 27.5)]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    SPEEDUPS,
    Advice,
    center,
    fmt_ms,
    is_cuda,
    pct,
    tree_step_ms,
    with_saving,
)
from torchdoctor.analyze.advice.hot_lines_data import measured_lines

#: the phases a float64 model computes in float64
_COMPUTE_PHASES = ("forward", "backward", "optimizer")


def float64_training(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when an optimizer steps float64 parameters.

    Example:
        >>> float64_training({"environment": {"optimizers": [{"dtype": "float32"}]}})
        []
    """
    environment = session.get("environment") or {}
    doubles = [o for o in environment.get("optimizers") or () if o.get("dtype") == "float64"]
    step = tree_step_ms(session)
    if not doubles or step <= 0:
        return []
    phases = session.get("phases") or {}
    present = [name for name in _COMPUTE_PHASES if center(phases.get(name)) > 0]
    compute = sum(center(phases.get(name)) for name in present)
    compute = min(compute, step) if compute > 0 else step
    # (the phases the steps shown hold: a run whose one LBFGS step was warm-up shows only the
    # prediction after it, whose forward is no "forward + backward + optimizer")
    label = " + ".join(present) if present else "the step"
    numel = sum(int(o.get("numel") or 0) for o in doubles)
    cuda = is_cuda(session)
    speedup = SPEEDUPS["float32"]
    advice = Advice(
        rule="float64-training",
        title="The model trains in float64: train it in float32",
        confidence="medium",
        evidence=[
            f"{', '.join(sorted({str(o.get('type')) for o in doubles}))} steps {numel:,} "
            "float64 parameters: the forward, backward and update compute in double precision",
            f"{label}: {fmt_ms(compute)} per step "
            f"({pct(compute, step):.0f}%)",
            f"measured: {speedup.source}"
            + ("; on this GPU the gap is larger and depends on the card" if cuda else ""),
        ],
        fix="Drop the .double() calls (model.float() and float32 inputs) unless the model is "
        "shown to need double precision; compare the loss curve once. Then a faster kernel "
        "(nn.LSTM for a loop of cells, bf16 autocast) can pay off: in float64 on a CPU, "
        "nn.LSTM measured no faster than a loop of LSTMCells.",
        code="model = Model().double(); x = x.double()   # before\n"
        "model = Model(); x = x.float()              # after: float32",
        references=["torch.Tensor.float", "torch.set_default_dtype"],
        cause="float64",
        heat=min(1.0, compute / step),
    )
    if any(o.get("default_dtype") == "float64" for o in doubles):
        # (odd2's s_dtype_device_det: torch.set_default_dtype(torch.float64) and no .double()
        # anywhere was told "Drop the .double() calls")
        advice.evidence.append("the default dtype was float64 at the optimizer's first step: "
                               "every tensor and parameter made without a dtype is double")
        advice.fix = (
            "Set the default dtype back to float32 (remove torch.set_default_dtype(torch.float64)"
            " or torch.set_default_tensor_type(torch.DoubleTensor), and any .double() calls) "
            "unless the model is shown to need double precision; compare the loss curve once."
            + advice.fix.split("compare the loss curve once.", 1)[1]
        )
        advice.code = ("torch.set_default_dtype(torch.float64)   # before\n"
                       "torch.set_default_dtype(torch.float32)   # after (or remove the call)")
    made = _float64_lines(session)
    if made:  # (time_sequence_prediction's forward makes its states in float64: seq.float() alone
        # then fails with "mat1 and mat2 must have the same dtype")
        shown = ", ".join(
            f"{r['location']} `{str(r.get('code') or '').strip()[:60]}`" for r in made[:4]
        ) + (f" and {len(made) - 4} more" if len(made) > 4 else "")
        advice.evidence.append(f"the run's lines that ask for float64: {shown}")
        where = ", ".join(r["location"] for r in made[:6])
        advice.fix += (
            f" Change every line that asks for float64 (here {where}): dtype=torch.double / "
            "torch.float64 in a forward makes its tensors float64 whatever the model's dtype, "
            "and a float32 model then fails on mixed dtypes; use the input's dtype "
            "(dtype=input.dtype) instead."
        )
        advice.locations = [r["location"] for r in made]
    if not cuda:
        with_saving(advice, step, compute / step, speedup)
    return [advice]


_FLOAT64 = re.compile(r"\.double\(|torch\.double\b|torch\.float64\b|dtype=['\"]float64")


def _float64_lines(session: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The measured source lines of the run that ask for float64 (``.double()``,
    ``dtype=torch.double``, ``torch.float64``), in file and line order.

    Example:
        >>> row = {"file": "/w/t.py", "line": 20, "location": "t.py:20", "owner": "",
        ...        "code": "h = torch.zeros(n, 51, dtype=torch.double)", "total_ms": {"mean": 1.0},
        ...        "forward_ms": {"mean": 1.0}, "backward_ms": {"mean": 0.0},
        ...        "calls_per_step": 1, "torch_calls_per_step": 1, "top_ops": []}
        >>> [r["location"] for r in _float64_lines({"hot_lines": {"lines": [row]}})]
        ['t.py:20']
    """
    rows = [r for r in measured_lines(session) if _FLOAT64.search(str(r.get("code") or ""))]
    return sorted(rows, key=lambda r: (str(r.get("file")), int(r.get("line") or 0)))
