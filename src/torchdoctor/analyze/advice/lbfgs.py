"""Rule ``lbfgs-bookkeeping``: torch.optim.LBFGS's own work takes a large share of the step.

``LBFGS.step(closure)`` runs the closure (forward and backward) up to ``max_iter`` times, and
around each call its own bookkeeping: a two-loop recursion over up to ``history_size`` stored
pairs (two dot products and an update of the whole parameter vector per pair), the line
search's reads of the loss on the host. On a small model (a PINN, a curve fit) that bookkeeping,
hundreds of tiny torch calls per iteration, is most of the step: a 769-parameter MLP with
``max_iter=20`` took 128 ms a step at the default ``history_size=100``, 51-72 ms at 20 (the
iterates differ: a smaller history is another quasi-Newton approximation).

The detailed steps' phases tell it: the optimizer phase holds what ``step()`` runs outside
the closures' forward and backward (light steps do not tell forward from the rest, and a fit
that converged runs fewer iterations a step later on: the detailed steps' shares, not times
from different steps, make the estimate).

Example:
    >>> phases = {"forward": {"median": 37.0}, "backward": {"median": 25.0},
    ...           "optimizer": {"median": 199.0}}
    >>> session = {"step_ms": {"median": 130.0}, "phases": phases,
    ...            "environment": {"optimizers": [{"type": "LBFGS", "history_size": 100,
    ...                                            "max_iter": 20, "numel": 769}]}}
    >>> [a.title[:34] for a in lbfgs_bookkeeping(session)]
    ["LBFGS's own work takes 76% of the "]
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, advice_step_ms, fmt_ms, median
from torchdoctor.analyze.advice.optimizer_stages import class_steps, index_text, main_optimizer

#: LBFGS's own work, at least, as a share of the step, that makes the advice
MIN_SHARE = 0.25
#: a history this short is the remedy already
SMALL_HISTORY = 10

_MEASURED = ("measured: a PINN-sized MLP (769 parameters, max_iter=20) on a CPU, history_size="
             "100 128 ms a step, 20 51-72 ms, 10 46-79 ms (three interleaved rounds)")


def lbfgs_bookkeeping(session: Mapping[str, Any]) -> list[Advice]:
    """Advice when LBFGS's own work, outside its closures, is >= MIN_SHARE of the step.

    Example:
        >>> adam = {"step_ms": {"median": 10.0}, "phases": {"optimizer": {"median": 9.0}},
        ...         "environment": {"optimizers": [{"type": "Adam"}]}}
        >>> lbfgs_bookkeeping(adam)  # (another optimizer: its own rules)
        []
    """
    optimizers = [o for o in (session.get("environment") or {}).get("optimizers") or ()
                  if o.get("type") == "LBFGS"]  # fmt: skip
    step = advice_step_ms(session)
    phases = {name: median(stat) for name, stat in (session.get("phases") or {}).items()}
    stage = _stage(session)
    if stage is not None:  # (an L-BFGS stage after another optimizer's: its steps' own)
        step, phases, stage_text, heat = stage
    total = sum(phases.values())
    if not optimizers or step <= 0 or total <= 0:
        return []
    share = phases.get("optimizer", 0.0) / total
    if share < MIN_SHARE:
        return []
    own = share * step
    settings = optimizers[0]
    history = settings.get("history_size") or 100
    iters = settings.get("max_iter") or 20
    if history <= SMALL_HISTORY:
        return []  # (nothing to shorten)
    evidence = [
        f"optimizer.step() outside the closures' forward and backward is {share:.0%} of the "
        f"detailed steps' time: LBFGS's own work, ~{fmt_ms(own)} of the {fmt_ms(step)} step",
        f"history_size={history}, max_iter={iters}: each of up to {iters} iterations a step runs "
        f"a two-loop recursion over up to {history} stored pairs, ~{4 * history} small vector "
        f"operations on {int(settings.get('numel') or 0):,} parameters",
        _MEASURED,
    ]
    if stage is not None:
        evidence.insert(0, stage_text)
    return [Advice(
        rule="lbfgs-bookkeeping",
        title=f"LBFGS's own work takes {share:.0%} of the step: a smaller history_size" if stage
        is None else f"LBFGS's own work takes {share:.0%} of its steps ({heat:.0%} of the run is "
        "L-BFGS's): a smaller history_size",
        confidence="medium",
        evidence=evidence,
        fix="Lower history_size (10-20 is common; scipy's L-BFGS-B keeps 10) and check that the "
        "loss still converges as fast per step: the iterates change. Each stored pair costs "
        "tiny torch calls per iteration, so on a small parameter vector the per-call overhead, "
        "not the arithmetic, is the time; on a GPU each of its host reads of the loss (the line "
        "search, the tolerance checks) also waits for the device. For a problem this small, "
        "scipy.optimize.minimize(method='L-BFGS-B') on the host (the loss and gradient from "
        "torch) is another option.",
        references=["torch.optim.LBFGS"],
        code="opt = torch.optim.LBFGS(params, max_iter=20)                   # before\n"
        "opt = torch.optim.LBFGS(params, max_iter=20, history_size=10)  # after",
        heat=min(1.0, own / step) if stage is None else heat * share,
    )]


def _stage(session: Mapping[str, Any]) -> tuple[float, dict[str, float], str, float] | None:
    """Where the run changed optimizer and LBFGS's steps are not most (Adam's thousands, then
    L-BFGS's few: DeepXDE's recipe): its steps' median time, the phases of its detailed steps
    (the tree leaves such long steps out), what they are, and their share of the run; None
    where LBFGS's steps are the typical step (the session's phases are theirs)."""
    steps = class_steps(session, "LBFGS")
    main = main_optimizer(session)
    detailed = [s for s in steps if s.get("detailed") and s.get("phases")]
    if not steps or main in (None, "LBFGS"):
        return None
    if not detailed:  # (none recorded in full: nothing tells its own work)
        return 0.0, {}, "", 0.0
    phases = {name: statistics.median(float(s["phases"].get(name) or 0.0) for s in detailed)
              for name in detailed[0]["phases"]}  # fmt: skip
    stage_ms = sum(float(s.get("wall_ms") or 0.0) for s in steps)
    run_ms = sum(float(s.get("wall_ms") or 0.0) for s in session.get("steps") or ())
    share = stage_ms / run_ms if run_ms > 0 else 0.0
    step = statistics.median(float(s.get("wall_ms") or 0.0) for s in steps)
    text = (f"the run's L-BFGS stage, {index_text(steps)} after {main}'s, took "
            f"{fmt_ms(stage_ms)} ({share:.0%} of the run), {fmt_ms(step)} a step: the figures "
            f"here are its {len(detailed)} detailed step(s)' (the tree and the median step are "
            f"{main}'s)")
    return step, phases, text, share
