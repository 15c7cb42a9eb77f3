"""Rule ``grad-passes``: a line running many ``torch.autograd.grad`` passes per step.

``session["grad_passes"]`` (``collect/grad_passes.py``) holds, per user line, the
``torch.autograd.grad`` passes it started and their time per step. Many of them from one line
(at least :data:`MIN_PASSES`) are a loop over outputs: ``torch.autograd.functional.jacobian`` /
``hessian`` without ``vectorize=True`` (one pass per output element), or a script's own loop
of ``grad`` calls, one per row or per sample. Their time sits in the modules' backward in the
tree, where nothing names the line. When the line is such a Jacobian call (lint TD104 on it, or
its text) the cure is ``vectorize=True`` with its benchmarked speedup
(``jacobian_cure.JACOBIAN_ROWS``); otherwise batching the passes is told with no saving, unless
most passes follow a new forward of the model (``after_forward``, at least
:data:`NEW_FORWARD`): each then differentiates another graph (MAML's inner steps through
higher's ``diffopt.step``, each after the adapted model's forward), which ``is_grads_batched``
cannot batch; independent ones (tasks, samples) batch with ``torch.func`` over the forward too.

Example:
    >>> row = {"file": "/w/reg.py", "line": 8, "location": "reg.py:8", "passes_per_step": 32.0,
    ...        "ms_per_step": 12.0, "code": "J = jacobian(f, x, create_graph=True)"}
    >>> (item,) = grad_passes({"step_ms": {"median": 20.0}, "grad_passes": [row]})
    >>> item.title[:50], round(item.estimated_saving_ms, 1)
    ('reg.py:8 runs 32 gradient passes per step (60% of ', 8.6)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, amdahl_saving, fmt_ms, location, pct
from torchdoctor.analyze.advice.hot_lines import findings_on
from torchdoctor.analyze.advice.jacobian_cure import JACOBIAN_ROWS
from torchdoctor.session_read import step_ms

#: passes per step from one line that make a loop over outputs
MIN_PASSES = 8
#: ... taking at least this share of the step
MIN_SHARE = 0.05
#: lines advised at most
MAX_ADVICE = 3
#: the share of a line's passes that follow a new module call that makes them passes over
#: new forwards (an inner optimization loop), not one graph's rows
NEW_FORWARD = 0.75

_NEW_FORWARD_FIX = (
    "Each pass differentiates a new forward of the model (an inner loop: MAML's adaptation "
    "steps, a per-sample loop), so is_grads_batched, which batches vectors over one graph, "
    "does not apply. Passes that depend on the previous one (one task's inner steps) stay in "
    "sequence; independent ones batch together with their forwards: torch.func.vmap over "
    "tasks or samples of torch.func.grad(lambda p, x, y: loss(torch.func.functional_call("
    "model, p, (x,)), y)) (functorch's MAML example vmaps the tasks' whole inner loops). "
    "Fewer inner steps, or first-order MAML (no create_graph), cut the passes' cost too."
)

_BATCH_FIX = (
    "Batch the passes: torch.autograd.grad(outputs, inputs, grad_outputs=V, "
    "is_grads_batched=True) takes a stack of vectors V (one row per pass) and runs them as one "
    "vmapped pass; torch.func.vmap over torch.func.vjp, or torch.func.jacrev / jacfwd for a "
    "whole Jacobian, do the same. A function vmap cannot batch (data-dependent Python control "
    "flow, .item()) raises: keep the loop there."
)


def grad_passes(session: Mapping[str, Any]) -> list[Advice]:
    """One advice per line running >= MIN_PASSES gradient passes per step that take >=
    MIN_SHARE of it.

    Example:
        >>> grad_passes({})  # (a session without the evidence this rule reads)
        []
    """
    step = step_ms(session)
    if step <= 0:
        return []
    advice = []
    for row in (session.get("grad_passes") or ())[:MAX_ADVICE]:
        passes, ms = float(row.get("passes_per_step") or 0.0), float(row.get("ms_per_step") or 0.0)
        if passes < MIN_PASSES or ms < MIN_SHARE * step:
            continue
        code = str(row.get("code") or "")
        where = str(row.get("location") or "?")
        jacobian = any(f.get("code") == "TD104" for f in findings_on(session, row)) or any(
            f"{name}(" in code for name in ("jacobian", "hessian"))  # fmt: skip
        evidence = [
            f"{where} `{code}`: {passes:.0f} torch.autograd.grad passes per step, "
            f"{fmt_ms(ms)} of host time ({pct(ms, step):.0f}% of the step), measured in the "
            "detailed steps; the tree counts their time in the modules' backward"
        ]
        saving = speedup = None
        fresh = not jacobian and float(row.get("after_forward") or 0.0) >= NEW_FORWARD
        if fresh:
            evidence.append(f"{float(row['after_forward']):.0%} of them follow a new forward of "
                            "the model (a module call since the line's previous pass)")
        if jacobian:
            speedup = JACOBIAN_ROWS.speedup
            saving = amdahl_saving(step, ms / step, speedup.low)
            evidence.append(f"saving: Amdahl over the passes' time with vectorize=True's "
                            f"benchmarked speedup {speedup.low:g}x-{speedup.high:g}x "
                            f"({speedup.source})")  # fmt: skip
        advice.append(
            Advice(
                rule="grad-passes",
                title=f"{where} runs {passes:.0f} gradient passes per step ({pct(ms, step):.0f}% "
                "of the step): "
                + ("build the Jacobian in one batched pass" if jacobian else
                   "each after a new forward" if fresh else "batch them"),
                estimated_saving_ms=saving,
                saving_range_ms=(None if speedup is None else
                                 [saving, amdahl_saving(step, ms / step, speedup.high)]),
                confidence="high" if jacobian else "medium",
                evidence=evidence,
                fix=JACOBIAN_ROWS.fix if jacobian else _NEW_FORWARD_FIX if fresh else _BATCH_FIX,
                code=JACOBIAN_ROWS.code if jacobian else None,
                references=list(JACOBIAN_ROWS.references) if jacobian else [
                    "torch.autograd.grad", "torch.func.vmap"],
                locations=[location(row.get("file"), row.get("line"))],
                heat=min(1.0, ms / step),
            )  # fmt: skip
        )
    return advice
