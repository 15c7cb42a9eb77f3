"""``tune_script``: the whole tune of a script, trials interleaved, within a time budget.

1. A baseline trial (no knob) measures the step and observes the script: which knobs apply.
2. The plan (``tuning/plan.py``) fits rounds and steps into what is left of the budget.
3. Each round runs baseline, knob A, baseline, knob B, ...; the first of those baselines is the
   baseline's second run, so its run-to-run drift is known. A knob that failed, drifted or ran
   far slower than the baseline (``DECISIVELY_SLOWER``) is not run again.
4. The knobs the plan left out get a pair each as time allows (before a third round of any
   planned knob), then a second pair for those that looked faster in theirs.
5. The best compatible set of accepted knobs runs as one more (baseline, combination) pair.

Ctrl-C (KeyboardInterrupt) stops the tune and keeps the trials done so far; so does running
out of budget. The result is a plain dict (``tuning/session.py`` makes a Session of it).

Example (a script with no module: every knob is skipped with its reason):
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "plain.py")
    >>> _ = open(path, "w").write("import torch\\nfor _ in range(50):\\n"
    ...     "    x = torch.ones(2, requires_grad=True)\\n    (x * 2).sum().backward()\\n")
    >>> result = tune_script(path, budget_s=120, workdir=os.path.dirname(path))
    >>> [row["status"] for row in result["rows"]][:2]
    ['skipped', 'skipped']
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from torchdoctor.collect.script_module import absolute_target
from torchdoctor.tuning.evaluate import MIN_GAIN, MIN_PAIRS, combination, knob_row, knob_rows
from torchdoctor.tuning.knobs import KNOB_BY_NAME, KNOBS, snippet
from torchdoctor.tuning.plan import COMPILE_GUESS_S, MAX_ROUNDS, plan
from torchdoctor.tuning.stats import (
    measured_ms,
    pair_speedups,
    trial_drift,
    trial_ms,
    warmup_s,
)
from torchdoctor.tuning.trial import run_trial

Progress = Callable[[str, float], None]

DEFAULT_TOLERANCE = 0.05
PROBE_STEPS = 10
WARMUP = 2


class _Clock:
    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.start = time.perf_counter()

    @property
    def spent(self) -> float:
        return time.perf_counter() - self.start

    @property
    def left(self) -> float:
        return self.budget_s - self.spent


def _selected(knobs: Sequence[str] | None) -> list[str]:
    if knobs is None:
        return [k.name for k in KNOBS if not k.hidden]
    unknown = [k for k in knobs if k not in KNOB_BY_NAME]
    if unknown:
        known = ", ".join(k.name for k in KNOBS if not k.hidden)
        raise ValueError(f"unknown knob(s) {', '.join(unknown)}; the knobs are: {known}")
    return list(knobs)


#: a knob this much slower than the baseline in a pair gets no more rounds (its time goes to
#: the knobs the plan left out): bf16 autocast on a CPU without bf16 units, 0.55x
DECISIVELY_SLOWER = 0.8


def _decisively_slower(knob_pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> bool:
    """Whether every pair measured the knob below DECISIVELY_SLOWER x the baseline's speed,
    with even the knob's fastest step slower than the baseline's median: a slowdown the whole
    trial shows, not a disturbance in part of it (pytorch/examples VAE with fused Adam: steps of
    14-19 ms, then 20-25 ms from the trial's middle on, a 0.69x pair; three pairs measured it
    1.27x faster).

    Example:
        >>> base, slow = {"warmup": 0, "step_ms": [10.0]}, {"warmup": 0, "step_ms": [18.0]}
        >>> _decisively_slower([(base, slow)]), _decisively_slower([(base, base)])
        (True, False)
        >>> shifted = {"warmup": 0, "step_ms": [9.0, 10.0, 16.0, 16.0, 16.0]}
        >>> _decisively_slower([(base, shifted)])  # (its first steps were as fast)
        False
    """
    ratios = pair_speedups(knob_pairs)
    if not ratios or max(ratios) >= DECISIVELY_SLOWER:
        return False
    for base, knob in knob_pairs:
        base_ms, knob_steps = trial_ms(base), measured_ms(knob)
        if base_ms is None or not knob_steps or min(knob_steps) <= base_ms:
            return False
    return True


def _looked_faster(knob_pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> bool:
    """Whether a knob's only pair so far measured it faster (worth a confirming pair).

    Example:
        >>> base, fast = {"warmup": 0, "step_ms": [10.0]}, {"warmup": 0, "step_ms": [8.0]}
        >>> _looked_faster([(base, fast)]), _looked_faster([(base, fast)] * 2)
        (True, False)
    """
    ratios = pair_speedups(knob_pairs)
    return len(ratios) == 1 and ratios[0] >= 1.0 + MIN_GAIN


def _overhead_s(result: dict[str, Any]) -> float:
    return max(0.5, float(result.get("wall_s") or 0.0) - sum(result.get("step_ms") or []) / 1e3)


def tune_script(
    script: str,
    args: Sequence[str] = (),
    *,
    budget_s: float = 300.0,
    knobs: Sequence[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    warmup: int = WARMUP,
    steps: int | None = None,
    rounds: int | None = None,
    seed: int = 0,
    workdir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Tune ``script`` (run with ``args``); the plain-data result (rows, chosen set, snippet).

    Example:
        >>> tune_script("train.py", knobs=["turbo"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown knob(s) turbo; the knobs are: bf16_autocast, fp16_autocast, compile, ...
    """
    names = _selected(knobs)
    clock = _Clock(budget_s)
    folder = str(workdir or tempfile.mkdtemp(prefix="torchdoctor-tune-"))
    say = progress or (lambda text, done: None)
    trials = 0

    boundary: str | None = None  # the probe's, for the trials after it

    def trial(knob_names: Sequence[str], n_steps: int, window: float | None,
              grace_s: float | None = None) -> dict[str, Any]:  # fmt: skip
        nonlocal trials
        trials += 1
        timeout = max(60.0, clock.left + 30.0)
        result = run_trial(script, args, knob_names, workdir=folder, warmup=warmup,
                           steps=n_steps, max_seconds=window, seed=seed, timeout=timeout,
                           boundary=boundary, grace_s=grace_s)  # fmt: skip
        if str(result.get("error") or "").startswith("timed out") and any(
            "compile" in k for k in knob_names
        ):
            result["error"] += (" (compiling the model took longer than the budget left: "
                                "a larger --budget, or --knobs compile alone, gives it time)")  # fmt: skip
        return result

    result: dict[str, Any] = {
        "script": absolute_target(script), "args": list(args), "tolerance": tolerance,
        "rows": [], "combination": None, "chosen": [], "snippet": "", "interrupted": False,
        "baseline": None, "plan": None, "notes": [],
    }  # fmt: skip
    say("baseline (observing the script)", 0.0)
    try:
        probe = trial([], steps or PROBE_STEPS, max(5.0, 0.1 * budget_s),
                      grace_s=min(10.0, max(2.0, 0.05 * budget_s)))  # (a rollout first)
    except KeyboardInterrupt:
        result["interrupted"] = True
        return result
    if probe.get("mode") in ("optimizer", "backward"):
        boundary = probe["mode"]  # (model calls before the first one: no inference loop)
    observed = {**(probe.get("observed") or {}), "kernel": probe.get("kernel")}  # (malloc_cache)
    result["observed"] = observed
    base_ms = trial_ms(probe)
    result["baseline"] = {"step_ms": base_ms, "steps_ms": measured_ms(probe),
                          "peak_memory_bytes": probe.get("peak_memory_bytes"),
                          "memory_kind": probe.get("memory_kind"), "mode": probe.get("mode"),
                          "warmup_s": warmup_s(probe), "drift": None,
                          "error": probe.get("error")}  # fmt: skip
    if base_ms is None:
        result["notes"].append("the baseline measured no step: " + str(
            probe.get("error") or "the script ended before warm-up was over; give it more "
            "steps (its own arguments) or lower --warmup"))  # fmt: skip
        return result
    candidates, skipped = [], []
    for name in names:
        reason = KNOB_BY_NAME[name].applies(observed)
        (skipped.append((name, reason)) if reason else candidates.append(name))
    step_s = base_ms / 1e3
    device = observed.get("device") or "cpu"
    extra = {k: COMPILE_GUESS_S.get(device, 60.0) for k in candidates if "compile" in k}
    the_plan = plan(clock.left, _overhead_s(probe), step_s, candidates, warmup=warmup,
                    extra_s=extra)  # fmt: skip
    if rounds:
        the_plan.rounds = rounds
    if steps:
        the_plan.steps = steps
    result["plan"] = {"rounds": the_plan.rounds, "steps": the_plan.steps, "warmup": warmup,
                      "budget_s": budget_s, "knobs": the_plan.knobs}  # fmt: skip
    window = max(2.0, 3.0 * the_plan.steps * step_s)
    pairs: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {k: [] for k in candidates}
    baselines = [probe]
    stopped: set[str] = set()
    total = max(1, the_plan.rounds * len(the_plan.knobs) * 2)
    done = 0
    walls: list[float] = []  # wall time of every trial of the rounds
    _round = 0

    def extras(confirming: bool) -> None:
        """The knobs the plan left out, as time allows: a first pair each, in order (those
        without one), or a second for those that looked faster in theirs."""
        for name in the_plan.left_out:
            if (not _looked_faster(pairs[name])) if confirming else pairs[name]:
                continue
            cost = 2 * (_overhead_s(probe) + step_s * (the_plan.steps + warmup))
            if clock.left < 1.2 * (cost + extra.get(name, 0.0)):
                return
            say(f"extra: {name}{' (a second pair)' if confirming else ''}", 0.99)
            base = trial([], the_plan.steps, window)
            baselines.append(base)
            pairs[name].append((base, trial([name], the_plan.steps, window + extra.get(name, 0.0))))

    try:
        while _round < the_plan.rounds or (
            # time left after the planned rounds: another round, as measured (not guessed)
            rounds is None
            and _round < MAX_ROUNDS
            and walls
            and clock.left
            > 1.3
            * statistics.mean(walls)
            * 2
            * len([k for k in the_plan.knobs if k not in stopped])
        ):
            if _round == MIN_PAIRS:  # (a knob left out measured before a third pair of any)
                extras(confirming=False)
            if all(name in stopped for name in the_plan.knobs):
                break  # (every planned knob failed, drifted or ran far slower)
            _round += 1
            label = f"round {_round}/{max(_round, the_plan.rounds)}"
            for name in the_plan.knobs:
                if name in stopped:
                    continue
                if clock.left < 2 * (_overhead_s(probe) + step_s * (the_plan.steps + warmup)):
                    raise TimeoutError
                say(f"{label}: baseline", min(0.99, done / total))
                base = trial([], the_plan.steps, window)
                baselines.append(base)
                done += 1
                say(f"{label}: {name}", min(0.99, done / total))
                measured = trial([name], the_plan.steps, window + extra.get(name, 0.0))
                done += 1
                walls += [base.get("wall_s") or 0.0, measured.get("wall_s") or 0.0]
                pairs[name].append((base, measured))
                if name in extra and not measured.get("error"):  # compiling time, now measured
                    cost = max(5.0, warmup_s(measured) - warmup_s(base))
                    extra = {k: cost for k in extra}
                if (
                    measured.get("error")
                    or (trial_drift(measured, base) or 0) > tolerance
                    or _decisively_slower([(base, measured)])
                ):
                    stopped.add(name)  # failed, drifting or far slower: no more rounds
        # time left after the plan: a first pair for each knob left out, then a second for
        # those that looked faster in theirs (one pair confirms nothing)
        extras(confirming=False)
        extras(confirming=True)
    except KeyboardInterrupt:
        result["interrupted"] = True
        result["notes"].append("interrupted (Ctrl-C): the table shows the trials done so far")
    except TimeoutError:
        result["notes"].append(f"the budget ({budget_s:g} s) ran out: the table shows the "
                               "trials done so far; give more with --budget")  # fmt: skip
    result["plan"]["rounds"] = _round
    base_drifts = [d for b in baselines[1:] if not b.get("error")
                   and (d := trial_drift(b, probe)) is not None]  # fmt: skip
    baseline_drift = max(base_drifts) if base_drifts else None
    result["baseline"]["drift"] = baseline_drift
    rows = knob_rows(names, dict(skipped), pairs, baseline_drift=baseline_drift,
                     tolerance=tolerance, left_out=the_plan.left_out,
                     interrupted=result["interrupted"])  # fmt: skip
    for row in rows:
        if row["status"] == "measured":
            row["snippet"] = snippet(KNOB_BY_NAME[row["knob"]], observed)
    result["rows"] = rows
    chosen = combination(rows)
    if len(chosen) > 1 and not result["interrupted"] and clock.left > 0:
        say("combination: " + " + ".join(chosen), 0.99)
        try:
            combo_pairs = []
            for _ in range(2):  # two pairs: a combination is accepted on MIN_PAIRS pairs too
                base = trial([], the_plan.steps, window)
                both = trial(
                    chosen, the_plan.steps, window + sum(extra.get(k, 0.0) for k in chosen)
                )
                combo_pairs.append((base, both))
            combo = knob_row("+".join(chosen), combo_pairs, baseline_drift=baseline_drift,
                             tolerance=tolerance, title="combination: " + " + ".join(chosen))  # fmt: skip
            combo["snippet"] = "\n".join(snippet(KNOB_BY_NAME[k], observed) for k in chosen)
            result["combination"] = combo
            best = max((r for r in rows if r.get("accepted")),
                       key=lambda r: r["speedup"]["median"])  # fmt: skip
            if not combo["accepted"] or combo["speedup"]["median"] < best["speedup"]["median"]:
                chosen = [best["knob"]]
        except KeyboardInterrupt:
            result["interrupted"] = True
            chosen = chosen[:1]
    result["chosen"] = chosen
    result["snippet"] = "\n".join(snippet(KNOB_BY_NAME[k], observed) for k in chosen)
    result["trials"] = trials
    result["spent_s"] = clock.spent
    say("done", 1.0)
    return result
