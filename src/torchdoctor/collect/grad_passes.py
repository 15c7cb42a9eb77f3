"""Gradient passes by the user line that starts them: ``torch.autograd.grad`` calls.

A training step's ``loss.backward()`` is one pass, which the module tree splits by module. A
line calling ``torch.autograd.grad`` (a gradient penalty, a PINN's derivatives, MAML's inner
step) or a function that loops over it (``torch.autograd.functional.jacobian`` / ``hessian``
without ``vectorize=True``: one pass per output element) starts passes whose time the tree
charges to the modules' backward too, where nothing says which line ran them, nor how many: a
Jacobian regulariser's 32 passes a step read as "Tanh's backward is 75% of the step". In
detailed steps each ``grad`` pass's host time is added to the user line that made it (the
innermost frame outside torch and torchdoctor), with the passes counted; the step's summary
holds them (``grad_passes``), and the session the mean per step over the tree's steps. A pass
that follows a module call made since the line's previous pass (``after_forward``: the share of
them) differentiates a new forward (MAML's inner steps, each after the adapted model's forward);
one that does not differentiates the same graph again (a Jacobian's rows).

Example:
    >>> passes = GradPasses()
    >>> import sys
    >>> passes.enter(sys._getframe()); passes.leave()
    >>> [(site[2], n) for site, (n, ns, fresh) in passes.take_step().items()]
    [('<module>', 1)]
"""

from __future__ import annotations

import linecache
import os
import time
from typing import Any

from torchdoctor.collect.syncs_frames import user_frame

#: rows kept in ``session["grad_passes"]`` (the heaviest)
MAX_ROWS = 10


class GradPasses:
    """The gradient passes of the running detailed step, per starting line (see the module
    docstring): ``{(file, line, function): [passes, ns, passes after a new module call]}``."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, int, str], list[int]] = {}
        self._open: list[tuple[tuple[str, int, str] | None, int]] = []
        self._calls: dict[tuple[str, int, str], int] = {}  # the module calls at each line's last

    def enter(self, frame: Any, calls: int = 0) -> None:
        """A pass begins: a ``grad`` pass called from ``frame`` (its user line is looked up
        outward), or, with None, one not counted (a ``backward()``, a light step's); ``calls``:
        the module calls made so far (the recorder's serial)."""
        if frame is None:  # (every backward pass comes here: no clock read for these)
            self._open.append((None, 0))
            return
        site = user_frame(frame)
        entry = self.table.get(site)
        if entry is None:
            entry = self.table[site] = [0, 0, 0]
        if self._calls.get(site) != calls:  # (a module ran since this line's previous pass)
            entry[2] += 1
            self._calls[site] = calls
        self._open.append((site, time.perf_counter_ns()))

    def leave(self) -> None:
        """The innermost open pass returned (or raised)."""
        if self._open:
            site, began = self._open.pop()
            if site is None:
                return
            entry = self.table.setdefault(site, [0, 0, 0])
            entry[0] += 1
            entry[1] += time.perf_counter_ns() - began

    def take_step(self) -> dict[tuple[str, int, str], list[int]] | None:
        """The step's table (None when it made no pass); the next step starts empty."""
        table, self.table = self.table, {}
        self._calls.clear()  # (a step's first pass follows its forward)
        return table or None


def grad_passes_section(steps: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """``session["grad_passes"]``: per user line, its ``grad`` passes and their host ms per step
    (means over ``steps``, the tree's detailed steps), heaviest first; None when none ran.

    Example:
        >>> steps = [{"grad_passes": {("/w/pinn.py", 12, "loss"): [3, 6_000_000]}}, {}]
        >>> row = grad_passes_section(steps)[0]
        >>> row["location"], row["passes_per_step"], row["ms_per_step"]
        ('pinn.py:12', 1.5, 3.0)
    """
    totals: dict[tuple[str, int, str], list[int]] = {}
    for step in steps:
        for site, (passes, ns, *fresh) in (step.get("grad_passes") or {}).items():
            entry = totals.setdefault(site, [0, 0, 0])
            entry[0] += passes
            entry[1] += ns
            entry[2] += fresh[0] if fresh else passes
    if not totals:
        return None
    rows = []
    for (file, line, function), (passes, ns, fresh) in sorted(totals.items(),
                                                              key=lambda kv: -kv[1][1]):
        rows.append({
            "file": file, "line": line, "function": function,
            "location": f"{os.path.basename(file)}:{line}",
            "code": linecache.getline(file, line).strip() if line else "",
            "passes_per_step": passes / len(steps), "ms_per_step": ns / len(steps) / 1e6,
            "after_forward": round(fresh / passes, 3) if passes else 0.0,
        })  # fmt: skip
    return rows[:MAX_ROWS]
