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
    if not cuda:
        with_saving(advice, step, compute / step, speedup)
    return [advice]
