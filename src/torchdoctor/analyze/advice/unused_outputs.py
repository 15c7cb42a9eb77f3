"""Rule ``unused-outputs``: parts of a module's forward whose outputs never reach the loss.

The profiler lists the module calls of detailed training steps whose outputs no gradient came
back through (``session["unused_outputs"]``, ``collect/unused_outputs.py``). Inside a module
some of whose other parts did send gradients back, such parts are computed and dropped: a
feature extractor returning every stage of which the loss reads one (pytorch/examples
fast_neural_style: VGG's four slices run, ``relu2_2`` alone is read; stopping after slice 2 cut
the step from 567 to 508 ms). A whole model none of whose parts are used (a target network or
an EMA teacher whose output is detached on purpose) is no waste and is not named.

The saving is the listed parts' forward time per call, once per step (the calls with
gradients are the ones seen; other calls of the module without gradients, an input's features
under ``no_grad``, compute the same parts and would save as much again: said, not counted).

Parts re-run inside backward (activation checkpointing: ``recomputed_ms`` on their nodes, Hugging
Face's ``gradient_checkpointing``) are not judged: their first forward's outputs are dropped by
design and the gradient goes through the re-run's, so none comes back through the outputs seen
(a TRL SFT run of a Llama was told to stop each decoder layer before its attention).

Example:
    >>> part = {"kind": "module", "path": "vgg.slice3", "name": "slice3", "calls_per_step": 1,
    ...         "forward_ms": {"median": 20.0}, "children": []}
    >>> used = {"kind": "module", "path": "vgg.slice1", "name": "slice1", "calls_per_step": 1,
    ...         "forward_ms": {"median": 5.0}, "children": []}
    >>> vgg = {"kind": "module", "path": "vgg", "name": "vgg", "type": "Vgg16",
    ...        "children": [used, part]}
    >>> s = {"step_ms": {"median": 100.0}, "tree": {"kind": "root", "children": [vgg]},
    ...      "unused_outputs": [{"path": "vgg.slice3", "steps": 5, "of_steps": 5}]}
    >>> [(a.rule, a.estimated_saving_ms) for a in unused_outputs(s)]
    [('unused-outputs', 20.0)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, center, fmt_ms, location, pct, tree_step_ms
from torchdoctor.session_read import walk

#: the parts' forward must be at least this share of the step
MIN_SHARE = 0.02


def recomputed_paths(tree: Mapping[str, Any] | None) -> set[str]:
    """The paths of the modules re-run inside backward (``recomputed_ms`` above 0: activation
    checkpointing) and of everything inside them.

    Example:
        >>> inner = {"path": "l.attn", "recomputed_ms": {"mean": 3.0},
        ...          "children": [{"path": "l.attn.q"}]}
        >>> sorted(recomputed_paths({"path": "l", "children": [inner, {"path": "l.mlp"}]}))
        ['l.attn', 'l.attn.q']
    """
    found: set[str] = set()
    for node, _ in walk(tree):
        if center(node.get("recomputed_ms")) > 0:
            found.update(str(n.get("path")) for n, _ in walk(node))
    return found


def unused_outputs(session: Mapping[str, Any]) -> list[Advice]:
    """One advice per module whose listed parts' outputs reach no loss while its other parts'
    do (see the module docstring).

    Example:
        >>> unused_outputs({})  # (a session without the evidence this rule reads)
        []
    """
    listed = {str(e.get("path")): e for e in session.get("unused_outputs") or ()
              if isinstance(e, Mapping)}  # fmt: skip
    step = tree_step_ms(session)
    if not listed or step <= 0:
        return []
    advice = []
    rerun = recomputed_paths(session.get("tree"))
    for parent, _ in walk(session.get("tree")):
        children = [c for c in parent.get("children") or () if c.get("kind") == "module"]
        if parent.get("kind") != "module" or str(parent.get("path")) in listed.keys() | rerun:
            continue
        unused = [c for c in children if str(c.get("path")) in listed
                  and str(c.get("path")) not in rerun]  # fmt: skip
        if not unused or len(unused) == len(children):  # (none of its parts used: on purpose)
            continue
        per_call = sum(center(c.get("forward_ms")) / max(1.0, float(c.get("calls_per_step") or 1))
                       for c in unused)  # fmt: skip
        if per_call < MIN_SHARE * step:
            continue
        names = ", ".join(str(c.get("name") or c.get("path")) for c in unused)
        # the last parts in call order (the later stages of a feature extractor): computed
        # and dropped; parts in between may be read without gradients (a router's indices, a
        # codebook's nearest entry, a decision): then no_grad is the remedy, not removal
        tail = children[-len(unused):] == unused
        where = str(parent.get("path") or parent.get("name"))
        first = listed[str(unused[0].get("path"))]
        source = parent.get("source") or {}
        calls = max(float(c.get("calls_per_step") or 1) for c in unused)
        advice.append(Advice(
            rule="unused-outputs",
            title=(f"{where} computes {names} for nothing: their outputs never reach the loss"
                   if tail else f"{names} in {where}: their outputs never reach the loss"),
            confidence="medium" if tail else "low",
            evidence=[
                f"{names} ran in {where}'s forward ({fmt_ms(per_call)} per call, "
                f"{pct(per_call, step):.0f}% of the step) and no gradient came back through "
                f"their outputs in {first.get('steps')} of {first.get('of_steps')} detailed "
                "steps, while the other parts of "
                f"{where} sent theirs back: nothing the loss depends on used them",
            ] + ([f"{where}'s parts run {calls:g} times a step: the calls without gradients "
                  "(features of an input under no_grad) compute them too, not counted here"]
                 if calls > 1 else []),
            fix=(f"Stop {where}'s forward after the last part whose output is read (return "
                 "early, or build it from the layers up to that part): a feature extractor "
                 "returning every stage of which the loss reads one computes the later stages "
                 "for nothing. If the outputs are read without gradients (metrics, logged "
                 "values, indices or decisions), compute them under torch.no_grad(), or less "
                 "often."),
            references=["torch.no_grad"],
            estimated_saving_ms=per_call if tail else None,
            heat=min(1.0, per_call / step),
            locations=[location(source.get("file"), source.get("line"))]
            if source.get("file") else [],
            cause=f"unused {where}",
        ))
    return advice
