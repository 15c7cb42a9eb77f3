"""Rule ``activation-checkpointing``: forward passes re-run inside backward (activation
checkpointing, ``torch.utils.checkpoint``, Hugging Face's ``gradient_checkpointing``) take a
sizable share of the step.

The profiler times each module forward that runs during a backward pass apart
(``recomputed_ms`` on the tree's nodes, part of their ``backward_ms``): that is the price paid
for the activation memory checkpointing saves. When the outermost recomputed parts take at
least MIN_SHARE of the step, the advice states that price, measured: checkpointing half the
layers saves about half of it, none all of it, if the memory allows.

Example:
    >>> block = {"kind": "module", "path": "h.0", "type": "Block", "forward_ms": {"mean": 4.0},
    ...          "backward_ms": {"mean": 12.0}, "recomputed_ms": {"mean": 4.0}, "children": []}
    >>> tree = {"kind": "root", "path": "", "children": [block]}
    >>> [(a.rule, a.saving_range_ms) for a in activation_checkpointing(
    ...     {"step_ms": {"mean": 20.0}, "tree": tree})]
    [('activation-checkpointing', [2.0, 4.0])]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    Advice,
    center,
    fmt_ms,
    is_cuda,
    pct,
    tree_step_ms,
    walk,
)

#: the recomputation must take at least this share of the step
MIN_SHARE = 0.05


def _outermost(node: Mapping[str, Any], found: list[Mapping[str, Any]]) -> None:
    for child in node.get("children") or ():
        if center(child.get("recomputed_ms")) > 0:
            found.append(child)
        else:
            _outermost(child, found)


def activation_checkpointing(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when the forward re-run in backward takes >= MIN_SHARE of the step.

    Example:
        >>> activation_checkpointing({})  # (a session without the evidence this rule reads)
        []
    """
    step = tree_step_ms(session)
    tree = session.get("tree")
    if not tree or step <= 0:
        return []
    parts: list[Mapping[str, Any]] = []
    _outermost(tree, parts)
    total = sum(center(p.get("recomputed_ms")) for p in parts)
    if total < MIN_SHARE * step:
        return []
    only = [p for p in parts if p.get("calls_per_step") == 0]  # (no call in the forward)
    if sum(center(p.get("recomputed_ms")) for p in only) >= total / 2:
        return [_backward_only(only, total, step)]
    paths = [str(p.get("path")) for p in parts]
    # Hugging Face's GradientCheckpointingLayer re-runs a layer's parts, not the layer: name
    # the layers they belong to
    called = {str(node.get("path")) for node, _ in walk(tree)}  # (a ModuleList is never called)
    owners = sorted({path.rsplit(".", 1)[0] for path in paths if "." in path} & called)
    shown = owners if owners and len(owners) < len(paths) else paths
    names = ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
    if shown is owners:
        names = f"parts of {names}"
    peaks = [s.get("peak_memory_bytes") for s in session.get("steps") or ()]
    peak = max((p for p in peaks if p), default=None) if is_cuda(session) else None
    evidence = [
        f"{len(parts)} checkpointed part(s) ({names}) re-run {fmt_ms(total)} of forward "
        f"inside backward per step ({pct(total, step):.0f}% of the step), measured",
        "checkpointing half of them saves about half of it, none of them all of it, at the "
        "cost of keeping their activations",
    ]
    if peak:
        evidence.append(f"peak device memory in the steps: {peak / 2**30:.3g} GiB")
    return [
        Advice(
            rule="activation-checkpointing",
            title=f"Activation checkpointing re-runs {pct(total, step):.0f}% of the step "
            f"({fmt_ms(total)}) as forward inside backward: checkpoint less if memory allows",
            estimated_saving_ms=total / 2,
            saving_range_ms=[total / 2, total],
            confidence="medium",
            evidence=evidence,
            fix="Checkpoint every other layer or only the largest blocks (torch.utils.checkpoint "
            "on fewer blocks; Hugging Face: model.gradient_checkpointing_disable() or "
            "TrainingArguments(gradient_checkpointing=False) when it fits), or keep the "
            "matmul outputs and recompute only cheap ops (selective checkpointing: "
            "torch.utils.checkpoint.create_selective_checkpoint_contexts).",
            references=["torch.utils.checkpoint.checkpoint"],
            cause="activation-checkpointing",
            heat=min(1.0, total / step),
        )
    ]


def _backward_only(parts: list[Mapping[str, Any]], total: float, step: float) -> Advice:
    """Modules that ran inside backward and never in the forward: no forward is re-run, a
    custom backward (an autograd Function's) calls the model. torchdiffeq's odeint_adjoint
    integrates an augmented ODE backward in time, calling the dynamics at every solver step
    (a fresh wrapper module each time); the ODE demo read "Activation checkpointing re-runs
    44% of the step ...: checkpoint less", a remedy it has no use for.

    Example:
        >>> part = {"path": "_PerturbFunc#4", "type": "_PerturbFunc", "calls_per_step": 0.0,
        ...         "recomputed_ms": {"mean": 40.0}}
        >>> _backward_only([part], 40.0, 100.0).title[:48]
        'A custom backward calls the model: _PerturbFunc '
    """
    types = sorted({str(p.get("type") or p.get("path")) for p in parts})
    names = ", ".join(types[:3]) + (f" and {len(types) - 3} more" if len(types) > 3 else "")
    return Advice(
        rule="activation-checkpointing",
        title=f"A custom backward calls the model: {names} run only inside backward, "
        f"{pct(total, step):.0f}% of the step ({fmt_ms(total)}), no re-run of the forward",
        confidence="medium",
        evidence=[
            f"{len(parts)} module instance(s) of {names} ran {fmt_ms(total)} per step inside "
            "backward and were never called in the forward: an autograd Function's backward "
            "calls them (an adjoint method, such as torchdiffeq's odeint_adjoint, solving an "
            "ODE backward in time; an implicit layer's fixed-point solve), not "
            "torch.utils.checkpoint",
        ],
        fix="This is the cost of the backward method: an adjoint solve saves the forward "
        "solver's memory by integrating again, backward, calling the model at every solver "
        "step. If the memory allows, backpropagate through the forward solve instead "
        "(torchdiffeq.odeint in place of odeint_adjoint: torchdiffeq's ODE demo, 60 steps, took "
        "13.1-13.3 s against 21.7-22.3 s with the adjoint, CPU); else looser tolerances for the backward solve "
        "(adjoint_rtol, adjoint_atol) take fewer steps. Check the gradients' accuracy either way.",
        references=["torchdiffeq.odeint_adjoint"],
        heat=min(1.0, total / step),
    )
