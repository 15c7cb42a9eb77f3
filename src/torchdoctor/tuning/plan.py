"""Fit the tune into its budget: rounds of (baseline, knob) pairs and steps per trial.

From the first baseline trial: the cost of a trial outside its steps (start-up, set-up) and the
time of one step. ``torch.compile`` knobs also pay compiling, guessed until one was measured.
The plan keeps at least 2 rounds when it can (a spread needs two pairs; interleaving beats long
trials on a noisy machine), then as many measured steps as fit (at most ``MAX_STEPS``); knobs that do not fit even with one round of
``MIN_STEPS`` steps are left out, last first.

Example:
    >>> p = plan(budget_s=100, overhead_s=2.0, step_s=0.01, knobs=["a", "b"], warmup=2)
    >>> p.rounds, p.steps, p.knobs
    (3, 30, ['a', 'b'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MIN_STEPS = 3
MAX_STEPS = 30
MAX_ROUNDS = 3
#: first guess of torch.compile's compiling time on a trial (seconds), until one is measured
COMPILE_GUESS_S = {"cpu": 30.0, "cuda": 60.0}
#: estimates are inflated by this factor: trials on a loaded machine run slower than the first
SAFETY = 1.3


@dataclass
class Plan:
    """Rounds, measured steps per trial and the knobs that fit; ``left_out`` did not.

    Example:
        >>> p = Plan(rounds=2, steps=10, warmup=2, knobs=["tf32"], left_out=["compile"])
        >>> p.knobs + p.left_out, p.estimate_s
        (['tf32', 'compile'], 0.0)
    """

    rounds: int
    steps: int
    warmup: int
    knobs: list[str]
    left_out: list[str] = field(default_factory=list)
    estimate_s: float = 0.0


def trial_cost(overhead_s: float, step_s: float, steps: int, warmup: int, extra_s: float = 0.0
               ) -> float:  # fmt: skip
    """Seconds one trial takes: its fixed cost, its steps, any compiling.

    Example:
        >>> trial_cost(2.0, 0.5, 4, 2)
        5.0
    """
    return overhead_s + step_s * (steps + warmup) + extra_s


def plan(
    budget_s: float,
    overhead_s: float,
    step_s: float,
    knobs: Sequence[str],
    *,
    warmup: int,
    extra_s: Mapping[str, float] | None = None,
    combination: bool = True,
) -> Plan:
    """The largest schedule that fits ``budget_s`` (see the module docstring).

    Example:
        >>> p = plan(budget_s=60, overhead_s=5.0, step_s=0.1, knobs=["tf32", "compile"], warmup=2,
        ...          extra_s={"compile": 60.0})
        >>> p.knobs, p.left_out, p.rounds
        (['tf32'], ['compile'], 3)
        >>> plan(budget_s=900, overhead_s=5.0, step_s=0.1, knobs=["compile", "tf32"], warmup=2,
        ...      extra_s={"compile": 60.0}).knobs  # (compiling last in each round)
        ['tf32', 'compile']
    """
    extra = dict(extra_s or {})
    # knobs that pay compiling run last in each round: a compile that takes longer than
    # guessed (YOLOv8 on a CPU: over 190 s) then leaves the quick knobs measured
    chosen = sorted(knobs, key=lambda k: extra.get(k, 0.0) > 0)
    left_out: list[str] = []
    while True:
        for rounds in range(MAX_ROUNDS, 0, -1):
            for steps in range(MAX_STEPS, MIN_STEPS - 1, -1):
                base = trial_cost(overhead_s, step_s, steps, warmup)
                total = base  # the second baseline (drift)
                for knob in chosen:
                    total += rounds * (base + trial_cost(overhead_s, step_s, steps, warmup,
                                                         extra.get(knob, 0.0)))  # fmt: skip
                if combination and len(chosen) > 1:
                    total += 2 * base + max(extra.get(k, 0.0) for k in chosen)
                if total * SAFETY <= budget_s and (rounds == 1 or steps >= MIN_STEPS + 2):
                    return Plan(rounds, steps, warmup, chosen, left_out, total)
        if not chosen:
            return Plan(0, MIN_STEPS, warmup, [], left_out, 0.0)
        left_out.insert(0, chosen.pop())
