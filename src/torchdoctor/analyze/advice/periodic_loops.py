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
from collections.abc import Mapping
from typing import Any

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
