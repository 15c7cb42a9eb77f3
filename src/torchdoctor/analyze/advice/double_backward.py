"""No torch.compile for a step that differentiates a gradient.

A gradient penalty (WGAN-GP, R1), a physics-informed network's derivatives, MAML's inner
step or a Hessian call ``torch.autograd.grad(..., create_graph=True)`` and then differentiate
again. Modules compiled with torch.compile refuse that second pass (torch 2.13:
"torch.compile with aot_autograd does not currently support double backward"): advice whose
remedy is compiling would break the user's step. The profiler notes the site of the first
``create_graph`` pass that another pass followed (``environment.knobs.double_backward``,
``collect/engine_state.note_double_backward``); advice whose remedy is torch.compile is then
dropped, and a fix that names torch.compile among other remedies says why not that one.

Example:
    >>> session = {"environment": {"knobs": {"double_backward": "train.py:12"}}}
    >>> kept = without_compile(session, [Advice("knobs", "torch.compile the model",
    ...                                         cause="torch.compile")])
    >>> kept
    []
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, prescribes_compile, with_sentence


def double_backward_site(session: Mapping[str, Any]) -> str | None:
    """``"file.py:line"`` where the run differentiates a gradient, or None.

    Example:
        >>> double_backward_site({"environment": {"knobs": {"double_backward": "gp.py:3"}}})
        'gp.py:3'
        >>> double_backward_site({}) is None
        True
    """
    knobs = (session.get("environment") or {}).get("knobs") or {}
    site = knobs.get("double_backward") if isinstance(knobs, Mapping) else None
    return str(site) if site else None


def without_compile(session: Mapping[str, Any], found: list[Advice]) -> list[Advice]:
    """``found`` without the advice whose remedy is torch.compile when the run differentiates
    a gradient; a fix naming torch.compile among other remedies gets why not that one.

    Example:
        >>> session = {"environment": {"knobs": {"double_backward": "gp.py:3"}}}
        >>> line = Advice("hot-line", "t", fix="Batch it, or compile it with torch.compile.")
        >>> without_compile(session, [line])[0].fix.endswith("double backward).")
        True
    """
    site = double_backward_site(session)
    if site is None:
        return found
    kept = []
    for item in found:
        if prescribes_compile(item):
            continue
        if "torch.compile" in (item.fix or "") and "double backward" not in item.fix:
            item.fix = with_sentence(
                item.fix, " Not torch.compile here: this step differentiates a gradient "
                f"({site}: create_graph=True, then a backward over it), which compiled modules "
                "refuse (torch: no support for double backward).",
            )
        kept.append(item)
    return kept


#: a dominant part whose backward is this many times its forward, in a step that
#: differentiates a gradient, holds the backward through that gradient's graph
THROUGH_GRADIENTS = 3.0


def gradient_graph_part(session: Mapping[str, Any], label: str, fwd: float, bwd: float,
                        step: float) -> Advice | None:  # fmt: skip
    """The advice for a dominant part whose backward is the backward through the step's
    ``create_graph`` gradients, or None: that backward runs through nodes the gradient passes
    built outside any module call, and the tree charges it to the module the gradients were
    taken through (a PINN's residual: its first Linear read "forward 0.41 ms, backward 10.8
    ms", told "make the matmul cheaper", where measured the backward through the derivatives
    was 18 of a 31 ms step and the Linear's own work a fraction of a millisecond).

    Example:
        >>> session = {"environment": {"knobs": {"double_backward": "pinn.py:7"}},
        ...            "grad_passes": [{"location": "pinn.py:7", "ms_per_step": 1.7,
        ...                             "passes_per_step": 1.0}]}
        >>> gradient_graph_part(session, "net.0", 0.4, 10.8, 30.0).title[:47]
        'net.0 holds the backward through the gradients '
        >>> gradient_graph_part(session, "net.0", 4.0, 10.8, 30.0) is None
        True
    """
    site = double_backward_site(session)
    if site is None or bwd < THROUGH_GRADIENTS * max(fwd, 1e-9):
        return None
    passes = [r for r in session.get("grad_passes") or () if r.get("location")]
    said = "; ".join(f"{r['location']} {float(r.get('passes_per_step') or 0):.3g} a step, "
                     f"{float(r.get('ms_per_step') or 0):.3g} ms" for r in passes[:3])  # fmt: skip
    return Advice(
        rule="dominant-module",
        title=f"{label} holds the backward through the gradients taken with create_graph=True "
        f"({site}): the derivatives' own backward, not the module's",
        confidence="medium",
        evidence=[
            f"{label}: forward {fwd:.3g} ms, backward {bwd:.3g} ms ({bwd / step:.0%} of "
            "the step): the step differentiates a gradient, and that backward runs through "
            "nodes the gradient passes built outside any module call; the tree charges it to "
            "the module the gradients were taken through",
            *([f"gradient passes: {said}"] if said else []),
        ],
        fix="This is the cost of the method (a physics-informed residual, a gradient penalty, "
        "a Hessian term): it scales with the points the derivatives are taken at and the "
        "network's size, not with this module's own arithmetic. Fewer collocation points per "
        "step, or the penalty every few steps (lazy regularization, as StyleGAN2's R1), cut "
        "it; torch.compile refuses a double backward, and forward-mode derivatives "
        "(torch.func.jvp) of a PINN's 2-input MLP measured 2x slower than reverse mode here (a "
        "CPU, 2,000 points).",
        references=["torch.autograd.grad", "torch.func.jvp"],
        cause="gradient-graph",  # (one advice for the modules the tree charged it to)
        heat=min(1.0, bwd / step),
    )
