"""Module calls whose outputs never reached the loss: computed in the forward, used by nothing
the backward pass went through.

In a detailed step with backward attribution, each module call whose outputs require grad gets
a pre-hook on their ``grad_fn`` (the start of the call's backward, ``collect/recorder.py``).
When a backward pass ran in the step and a call's hooks never fired, no gradient came back
through its outputs: nothing that reached the loss used them. A feature extractor returning
every stage's features of which the loss reads one (pytorch/examples fast_neural_style: VGG's
four slices run, ``relu2_2`` alone is read) computes its later stages for nothing.

The report names such calls only inside a module some of whose other parts did send gradients
back (``analyze/advice/unused_outputs.py``): a whole model whose output is detached on purpose
(a target network, an EMA teacher) has none of its parts used, and is no waste.

Example:
    >>> used, unused = [(1, 5, 0), (2, 5, 0)], [(3, 6, 0), (4, 7, 1)]
    >>> sorted(unused_calls([used, unused], [(used, 0.0)], first_serial=1))
    [3]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_START = 0  # MarkKind.START: the hook on a call's outputs


def unused_calls(registered: Sequence[list], fired: Sequence[tuple[list, Any]],
                 first_serial: int) -> set[int]:  # fmt: skip
    """The nodes of this step's calls (serial >= ``first_serial``) whose output hooks
    (``registered``: each hook's list of ``(node, serial, kind)`` marks) never fired, and no
    other output hook of the same call did; empty when no hook fired (no backward pass).

    Example:
        >>> unused_calls([[(3, 6, 0)]], [], first_serial=1)  # no backward ran: nothing to say
        set()
    """
    if not fired:
        return set()
    fired_ids = {id(entries) for entries, _ in fired}
    reached: set[tuple[int, int]] = set()
    waiting: set[tuple[int, int]] = set()
    for entries in registered:
        calls = reached if id(entries) in fired_ids else waiting
        for node, serial, kind in entries:
            if kind == _START and serial >= first_serial:
                calls.add((node, serial))
    return {node for node, serial in waiting - reached}


#: a call is listed when its outputs reached no loss in at least this share of the detailed
#: steps that ran a backward pass
MIN_SHARE = 0.5


def unused_section(detailed: Sequence[dict], path: Sequence[str]) -> list[dict[str, Any]]:
    """``session["unused_outputs"]``: the module paths whose outputs reached no loss in at
    least :data:`MIN_SHARE` of the detailed steps with a backward pass (``steps``, of
    ``of_steps``), from the summaries' ``unused_nodes``.

    Example:
        >>> steps = [{"unused_nodes": [3], "phases": {"backward": 1.0}}] * 2
        >>> unused_section(steps, ["", "vgg", "vgg.slice1", "vgg.slice3"])
        [{'path': 'vgg.slice3', 'steps': 2, 'of_steps': 2}]
    """
    backward = [s for s in detailed if float((s.get("phases") or {}).get("backward") or 0) > 0]
    counts: dict[int, int] = {}
    for summary in backward:
        for node in summary.get("unused_nodes") or ():
            counts[node] = counts.get(node, 0) + 1
    return [
        {"path": path[node], "steps": n, "of_steps": len(backward)}
        for node, n in sorted(counts.items())
        if 0 <= node < len(path) and n >= MIN_SHARE * len(backward)
    ]
