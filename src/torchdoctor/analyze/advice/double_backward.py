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
