"""What loop the long steps of ``periodic-steps`` ran: many model calls on a few samples each
(:func:`small_batch_loop`), an evaluation (the model in eval mode) or a rollout collecting
experience (:func:`rollout_function`), and the fix each kind gets.

Example:
    >>> row = {"location": "ppo.py:199", "calls_per_step": 2048.0, "typical_calls": 0.0,
    ...        "one_sample_share": 1.0, "samples_per_call": 1.0, "eval_share": 1.0}
    >>> samples_text(small_batch_loop({"long_step_calls": [row]}))
    'one sample'
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import fmt_ms
from torchdoctor.analyze.advice.one_sample import MIN_SHARE
from torchdoctor.analyze.advice.one_sample import MIN_STEPS as MANY_CALLS

#: most samples per call, on average, of a periodic loop of model calls told to batch them
SMALL_BATCH = 8


def small_batch_loop(session: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The row of ``long_step_calls`` under which the long steps called the model many more
    times than a typical step (>= MANY_CALLS), on a few samples each: nearly all on one (a
    first input of leading dimension 1) or <= SMALL_BATCH on average (a rollout stepping one
    environment, or a few, per policy call; a sampler drawing one sequence per call). The
    innermost such line (the fewest calls) of those a typical step never runs, else None.

    Example:
        >>> row = lambda loc, calls, each: {"location": loc, "calls_per_step": calls,
        ...     "typical_calls": 4.0, "one_sample_share": 0.0, "samples_per_call": each}
        >>> small_batch_loop({"long_step_calls": [row("t.py:7", 519.0, 4.0),
        ...                                       row("ppo.py:199", 128.0, 4.0)]})["location"]
        'ppo.py:199'
        >>> policy = {**row("ppo.py:126", 129.0, 5.0), "typical_calls": 1.0}
        >>> rollout = {**row("ppo.py:199", 256.0, 4.0), "typical_calls": 0.0}
        >>> small_batch_loop({"long_step_calls": [policy, rollout]})["location"]
        'ppo.py:199'
        >>> small_batch_loop({"long_step_calls": [row("eval.py:9", 40.0, 256.0)]}) is None
        True
    """
    rows = [
        r for r in session.get("long_step_calls") or ()
        if float(r.get("calls_per_step") or 0.0) - float(r.get("typical_calls") or 0.0)
        >= MANY_CALLS and (float(r.get("one_sample_share") or 0.0) >= MIN_SHARE
                           or float(r.get("samples_per_call") or 1e9) <= SMALL_BATCH)
    ]  # fmt: skip
    # (a line only long steps run, the rollout's, before one a typical step runs too: the
    # policy's own forward, whose calls mix the rollout's with the update's batches)
    return min(rows, key=lambda r: (float(r.get("typical_calls") or 0.0) > 0,
                                    float(r["calls_per_step"]))) if rows else None  # fmt: skip


def samples_text(loop: Mapping[str, Any]) -> str:
    """'one sample' or 'N samples' per call of a :func:`small_batch_loop` row.

    Example:
        >>> samples_text({"one_sample_share": 0.0, "samples_per_call": 4.0})
        '4 samples'
    """
    if float(loop.get("one_sample_share") or 0.0) >= MIN_SHARE:
        return "one sample"
    each = float(loop.get("samples_per_call") or 0.0)
    return f"{each:.0f} samples" if abs(each - round(each)) < 0.05 else f"{each:.1f} samples"


SMALL_BATCH_FIX = (
    "The periodic work calls the model on a few samples at a time (a rollout stepping one "
    "environment or a few, a sampler drawing one sequence at a time), and each call pays "
    "Python and dispatch overhead (on a GPU, a launch per kernel) whatever its batch: batch "
    "those calls. Step more environments per policy call and keep the samples per rollout "
    "(4x the environments, a quarter of the steps per environment: a quarter of the calls; "
    "gymnasium.vector; stable-baselines3: make_vec_env(env_id, n_envs=8)), draw several "
    "samples per call. "
)
EVALUATION_FIX = (
    "The periodic work is an evaluation (the model in eval mode) that calls the model on a "
    "few samples at a time, and each call pays Python and dispatch overhead (on a GPU, a "
    "launch per kernel) whatever its batch: evaluate the same samples in fewer, larger "
    "batches, or on fewer of them. "
)
#: share of a loop's calls with the model in eval mode that makes it an evaluation
EVALUATION_SHARE = 0.5


def is_evaluation(loop: Mapping[str, Any], session: Mapping[str, Any] | None = None) -> bool:
    """Whether a :func:`small_batch_loop` row's calls ran with the model in eval mode (an
    evaluation), unless the long steps ran them in a rollout (stable-baselines3 puts its
    policy in eval mode to collect experience: that is the training data, no evaluation).

    Example:
        >>> is_evaluation({"eval_share": 1.0}), is_evaluation({"eval_share": 0.0}), is_evaluation({})
        (True, False, False)
        >>> row = {"function": "collect_rollouts", "extra_ms": 900.0}
        >>> is_evaluation({"eval_share": 1.0}, {"long_step_calls": [row]})
        False
    """
    if session is not None and rollout_function(session) is not None:
        return False
    return float(loop.get("eval_share") or 0.0) >= EVALUATION_SHARE


#: functions that collect experience by stepping environments with the policy
_ROLLOUT = re.compile(r"(?i)rollout|collect_(experience|samples|trajector)|env_?step|interact")


def rollout_function(session: Mapping[str, Any]) -> str | None:
    """``function (location)`` of the rollout the long steps' extra model calls ran under
    (a function named for collecting experience holding half their extra time or more:
    stable-baselines3's ``collect_rollouts``, a script's ``rollout()``), else None.

    Example:
        >>> row = {"function": "collect_rollouts", "extra_ms": 900.0, "location": "opa.py:170"}
        >>> rollout_function({"long_step_calls": [row]})
        'collect_rollouts (opa.py:170)'
        >>> rollout_function({"long_step_calls": [{**row, "function": "evaluate"}]}) is None
        True
    """
    calls = session.get("long_step_calls") or []
    most = max((float(r.get("extra_ms") or 0.0) for r in calls), default=0.0)
    held = [r for r in calls if float(r.get("extra_ms") or 0.0) >= 0.5 * most > 0]
    # the innermost frames only (a test or `main` named for rollouts encloses the loop):
    # a package's chain is numbered innermost first; the user's rows come heaviest first,
    # equal ones innermost first
    user = [r for r in held if not r.get("package")]
    package = [r for r in held if r.get("package")]
    inner = ([min(user, key=lambda r: float(r.get("ms_per_step") or 0.0))] if user else []) + (
        [min(package, key=lambda r: int(r.get("order") or 0))] if package else [])
    for row in inner:
        if _ROLLOUT.search(str(row.get("function") or "")):
            return f"{row['function']} ({row.get('location', '?')})"
    return None


ROLLOUT_FIX = (
    "The long steps collect experience: a rollout stepping the environment with the policy, "
    "one observation (or a few) per call. It is the training data, so keep its size; make each "
    "policy call carry more environments (4x the environments, a quarter of the steps per "
    "environment: a quarter of the calls; gymnasium.vector; stable-baselines3: "
    "make_vec_env(env_id, n_envs=8), SubprocVecEnv when the environment's own step is the "
    "cost), and check the environment's step time: a Python environment is often most of it. "
)


def detailed_long(session: Mapping[str, Any]) -> list[int]:
    """The detailed steps left out of the tree for their length (the first two, warm-up
    residue, not counted, as for light steps, unless they evaluated: :func:`early_evaluation`).

    Example:
        >>> detailed_long({"config": {"detail": {"outlier_steps": [0, 40, 80]}}})
        [40, 80]
    """
    left = ((session.get("config") or {}).get("detail") or {}).get("outlier_steps") or []
    evaluating = {s.get("index") for s in session.get("steps") or () if early_evaluation(s)}
    return [int(i) for i in left if int(i) >= 2 or int(i) in evaluating]


def early_evaluation(step: Mapping[str, Any]) -> bool:
    """Whether one of the first steps, long, ran an evaluation (several model calls in eval
    mode: minGPT's trainer evaluates at iteration 0), not warm-up residue.

    Example:
        >>> early_evaluation({"model_calls": 301, "eval_calls": 300}), early_evaluation({})
        (True, False)
    """
    return int(step.get("eval_calls") or 0) >= 2


def sampled_text(session: Mapping[str, Any], long_ms: float | None = None) -> str:
    """What the detailed steps saw of the long ones (a detailed long step is left out of the
    tree and of the sampled lines, which describe the typical step, unless such steps are too
    many to leave out: then, over ``long_ms``, they are in both).

    Example:
        >>> sampled_text({"config": {"detail": {"outlier_steps": [40]}}})
        'detailed step 40 was one: the tree and the sampled lines leave it out (they describe the typical step)'
        >>> sampled_text({"steps": [{"index": 25, "wall_ms": 58.0, "detailed": True}]}, 20.0)
        'detailed step 25 was one, kept in the tree and the sampled lines (such steps are too many to leave out): the Between steps lines show its work'
    """
    left = detailed_long(session)
    kept = [int(s.get("index", 0)) for s in session.get("steps") or () if s.get("detailed")
            and long_ms is not None and float(s.get("wall_ms") or 0.0) > long_ms]  # fmt: skip
    if not left and kept:  # (r_weakref_gc's gc.collect() every 5 steps, aimed at step 25,
        # read "no detailed step was one" while the sampled lines named it)
        return (f"detailed step{'s' if len(kept) > 1 else ''} "
                f"{', '.join(str(i) for i in kept[:4])} {'were' if len(kept) > 1 else 'was'} "
                "one, kept in the tree and the sampled lines (such steps are too many to leave "
                f"out): the Between steps lines show {'their' if len(kept) > 1 else 'its'} work")
    if not left:
        return ("no detailed step was one: `torchdoctor run --detail always` records every "
                "step in full (it costs more)")  # fmt: skip
    calls = session.get("long_step_calls") or []
    user = [r for r in calls if not r.get("package")]
    if user:  # the user lines model calls ran under, innermost first: the evaluation's own
        most = max(float(r["extra_ms"]) for r in user)
        row = max((r for r in user if float(r["extra_ms"]) >= 0.9 * most),  # (not the
                  key=lambda r: (r.get("function") != "<module>", float(r["extra_ms"])))  # script)
        # (a line a typical step runs too calls the library loop that evaluates: name it)
        inside = package_path(calls, most) if float(row.get("typical_ms") or 0.0) else None
        return (f"in detailed step{'s' if len(left) > 1 else ''} "
                f"{', '.join(str(i) for i in left[:4])}, the model calls under "
                f"{row['location']} `{str(row.get('code') or '')[:60]}`"
                + (f", in {inside}," if inside else "")
                + f" took {fmt_ms(float(row['extra_ms']))} more than in a typical step")  # fmt: skip
    which = ", ".join(str(i) for i in left[:4])
    return (f"detailed step{'s' if len(left) > 1 else ''} {which} "
            f"{'were' if len(left) > 1 else 'was'} one: the tree and the sampled lines leave "
            f"{'them' if len(left) > 1 else 'it'} out (they describe the typical step)")  # fmt: skip


#: the knobs of a library's own loop that set how often and how much it evaluates
LOOP_KNOBS = {
    "transformers": " (Trainer: TrainingArguments(eval_steps=...) larger, "
    "per_device_eval_batch_size larger, or a smaller eval_dataset)",
    "lightning": " (Lightning: Trainer(val_check_interval=..., limit_val_batches=...), "
    "check_val_every_n_epoch)",
}
LOOP_KNOBS["pytorch_lightning"] = LOOP_KNOBS["lightning"]


def loop_package(session: Mapping[str, Any]) -> str | None:
    """The installed package whose own loop made the long steps' extra model calls.

    Example:
        >>> row = {"package": "lightning", "function": "_run", "extra_ms": 9.0,
        ...        "ms_per_step": 9.0, "typical_ms": 0.0, "location": "loop.py:3"}
        >>> loop_package({"long_step_calls": [row]}), loop_package({})
        ('lightning', None)
    """
    calls = session.get("long_step_calls") or []
    most = max((float(r["extra_ms"]) for r in calls), default=0.0)
    new = new_frames(calls, most)
    return str(new[0]["package"]) if new else None


def package_path(calls: list[Mapping[str, Any]], most: float) -> str | None:
    """The installed package's functions the long steps' model calls ran under and a typical
    step's never did (Hugging Face's Trainer evaluating inside the user's ``trainer.train()``),
    outermost first; None without any.

    Example:
        >>> row = lambda fn, order, typical: {"package": "transformers", "function": fn,
        ...     "location": f"trainer.py:{order}", "order": order, "extra_ms": 400.0,
        ...     "ms_per_step": 400.0 + typical, "typical_ms": typical}
        >>> package_path([row("train", 9, 88.0), row("_maybe_log_save_evaluate", 8, 0.0),
        ...                row("evaluate", 7, 0.0), row("train", 10, 0.0)], 400.0)
        "transformers' _maybe_log_save_evaluate → evaluate (trainer.py:8)"
    """
    new = new_frames(calls, most)
    if not new:
        return None
    names = " → ".join(str(r["function"]) for r in new[:4]) + (" → ..." if len(new) > 4 else "")
    package = str(new[0]["package"])
    return f"{package}{chr(39) if package.endswith('s') else chr(39) + 's'} {names} ({new[0]['location']})"


def new_frames(calls: list[Mapping[str, Any]], most: float) -> list[Mapping[str, Any]]:
    """The package rows of ``long_step_calls`` holding half the extra time or more and none of
    a typical step's, outermost first.

    Example:
        >>> row = {"package": "transformers", "function": "evaluate", "extra_ms": 9.0,
        ...        "ms_per_step": 9.0, "typical_ms": 0.0, "order": 2}
        >>> [r["function"] for r in new_frames([row], 9.0)]
        ['evaluate']
    """
    # (a function a typical step runs too, at another line, is the loop both go through)
    typical = {(r.get("file"), r["function"]) for r in calls
               if r.get("package") and float(r.get("typical_ms") or 0.0) > 0.0}  # fmt: skip
    new = [
        r for r in calls
        if r.get("package") and float(r["extra_ms"]) >= 0.5 * most
        and float(r.get("typical_ms") or 0.0) < 0.1 * float(r["ms_per_step"])
        and (r.get("file"), r["function"]) not in typical and r.get("new_function", True)
    ]  # fmt: skip
    return sorted(new, key=lambda r: -int(r.get("order") or 0))  # (first seen: innermost)


#: model calls over a typical step's that make a long step's evaluation (most in eval mode)
MIN_EXTRA_CALLS = 2


def model_calls(step: Mapping[str, Any], steps: list[Mapping[str, Any]]) -> tuple[int, int, int] | None:
    """``(calls, eval calls, a typical step's calls)`` of ``step``'s outermost model calls when
    it made MIN_EXTRA_CALLS or more over the typical (median) step's, else None.

    Example:
        >>> typical = [{"model_calls": 1}] * 9
        >>> model_calls({"model_calls": 41, "eval_calls": 40}, typical), model_calls({"model_calls": 1}, typical)
        ((41, 40, 1), None)
    """
    calls = int(step.get("model_calls") or 0)
    counted = [int(s.get("model_calls") or 0) for s in steps]
    typical = round(statistics.median(counted)) if counted else 0
    if calls - typical < MIN_EXTRA_CALLS:
        return None
    return calls, int(step.get("eval_calls") or 0), typical


#: a detailed long step over this multiple of the light long ones is the hooks' length
#: (a Lightning validation read 424 ms detailed against 359 light: kept as measured)
HOOKED = 1.5
def at_light_cost(step: Mapping[str, Any], light_ms: float) -> Mapping[str, Any]:
    """A detailed long step's record at the light long steps' typical length ``light_ms``
    when it took over :data:`HOOKED` times that (its phases scaled alike; ``detailed_wall_ms``
    keeps what it took):
    the profiler's hooks run on every call of a detailed step, and a long step of many small
    calls pays them thousands of times (cleanrl's PPO rollout: 1,801 ms detailed against
    440 ms light, which made the rollout 61% of the run instead of about 40%).

    Example:
        >>> s = at_light_cost({"wall_ms": 1800.0, "phases": {"other": 1700.0}}, 450.0)
        >>> s["wall_ms"], s["phases"]["other"], s["detailed_wall_ms"]
        (450.0, 425.0, 1800.0)
    """
    wall = float(step["wall_ms"])
    if wall <= HOOKED * light_ms:  # (within it: the work itself may differ; kept as measured)
        return step
    factor = light_ms / wall
    phases = {k: float(v or 0.0) * factor for k, v in (step.get("phases") or {}).items()}
    host = {k: float(step[k]) * factor for k in ("cpu_ms", "cpu_wait_ms")  # (host_time.py)
            if isinstance(step.get(k), (int, float))}  # fmt: skip
    return {**step, **host, "wall_ms": light_ms, "phases": phases, "detailed_wall_ms": wall}
