"""Rule ``unattributed``: >= 30% of the step's forward and backward runs outside any module or
region (functional losses, per-sample loops in the training script).

When the profile measured source lines of that code (the ``hot_lines`` section) explaining at
least a fifth of that time, the rule gives way to the line advice (rule ``hot-line``), which names
the lines; what stays unexplained (pure-Python work no torch call shows) keeps this advice. Otherwise the tree
cannot say which code that is, so the advice is to name it: wrap the suspect blocks in
``torchdoctor.region(...)`` and profile again. Static findings on lines outside every module's
and region's source are the first suspects (the lint rule ranks them by this share). No saving is
estimated: nothing is known about that code yet. The collectives' exposed wait (DDP's all-reduce
at the end of backward, outside every module) is left out: the collectives advice tells it. Nor
is it given when the profiler's own
measured cost in a detailed step could be that time (a step of small module calls, where the
hooks make a detailed step 3x a light one: cleanrl's DQN, 48% "outside any module", its light
step no longer than the hooks' cost).

Example:
    >>> unattributed({"tree": None})
    []
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms, pct, tree_step_ms, unattributed_ms
from torchdoctor.analyze.advice.hot_lines_data import root_lines_ms
from torchdoctor.analyze.advice.lint_hot import suspect_lines
from torchdoctor.session_read import saving_step_ms

THRESHOLD = 0.30
#: the rule gives way to the line advice when measured lines explain this share of the time
#: (not more: the profiler's own cost between torch calls is in that time, not in any line)
EXPLAINED = 0.2


def unattributed(session: Mapping[str, Any]) -> list[Advice]:
    """Advice when forward/backward work outside every module and region is >= 30% of the step.

    Example:
        >>> rest = {"kind": "self", "forward_ms": {"median": 6.0}, "backward_ms": {"median": 2.0}}
        >>> s = {"step_ms": {"median": 10.0}, "tree": {"kind": "root", "children": [rest]}}
        >>> unattributed(s)[0].heat
        0.8
    """
    step = tree_step_ms(session)
    # DDP's wait for its all-reduce runs in backward outside every module: the collectives
    # advice tells that part (a torchrun DDP tutorial's 1.02 ms "outside any module" was it)
    comm = session.get("collectives") or {}
    waiting = float(comm.get("exposed_ms_per_step") or 0.0) if isinstance(comm, Mapping) else 0.0
    rest = max(0.0, unattributed_ms(session) - waiting)
    if step <= 0 or rest < THRESHOLD * step:
        return []
    unprofiled = saving_step_ms(session)  # (the detailed step less the profiler's own cost)
    if rest - (step - unprofiled) < THRESHOLD * unprofiled:
        return []  # the profiler's cost could be all of it (tiny steps: cleanrl's DQN)
    measured = root_lines_ms(session)
    if measured is not None and measured >= EXPLAINED * rest:
        return []  # the hot-line advice names the lines
    suspected = suspect_lines(session)[:5]
    return [
        Advice(
            rule="unattributed",
            title=f"{pct(rest, step):.0f}% of the step runs outside any module: name that code "
            "with torchdoctor.region",
            confidence="high",
            evidence=[
                f"{fmt_ms(rest)} per step of forward and backward is claimed by no module or "
                f"region (the root's (self) entry, {pct(rest, step):.0f}% of the step)",
                "functional code (losses written with tensor ops, per-sample Python loops) lands "
                "here",
                *(f"suspect: {text}" for text, _ in suspected),
            ],
            fix='Wrap the suspect blocks in `with torchdoctor.region("name"):` (a no-op when '
            "nothing profiles) and profile again: each gets its forward and backward time.",
            references=["torchdoctor.region"],
            heat=min(1.0, rest / step),
            locations=[where for _, where in suspected],
            code="loss = ce + penalty(z, cov)                       # before\n"
            'with torchdoctor.region("penalty"):\n'
            "    p = penalty(z, cov)                             # after: measured\n"
            "loss = ce + p",
        )
    ]
