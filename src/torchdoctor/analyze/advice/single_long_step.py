"""Rule ``long-step``: one step of the run took many times the median (an evaluation, a checkpoint).

``periodic-steps`` tells work that comes back every N steps; a run that evaluated once (after
its first epoch, at the end of a short profiling run) has a single long step, and nothing else
in the report shows it: the tree and the median step leave it out. Told when it is >= RARE_LONG
x the median step and its extra time >= MIN_SHARE of the run. What it did comes from the
step's record: the phase its extra time went to, and its outermost model calls against a
typical step's (``steps[i].model_calls``, ``eval_calls``: light steps count them too), which
tell an evaluation (the model in eval mode) from a checkpoint or logging.

Example:
    >>> steps = [{"index": i, "wall_ms": 300.0 if i == 40 else 10.0, "detailed": False,
    ...           "phases": {"other": 291.0 if i == 40 else 1.0}, "model_calls": 1}
    ...          for i in range(60)]
    >>> steps[40].update(model_calls=201, eval_calls=200)
    >>> single_long_step({"steps": steps})[0].title
    'Step 40 of 60 took 30.0x the median: an evaluation between steps (200 model calls in eval mode, against 1 in a typical step) is 33% of the run'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms, numbering_note
from torchdoctor.analyze.advice.cpu_contention import (
    extra_split,
    off_core,
    off_core_advice,
    split_evidence,
    typical_wait_rate,
)
from torchdoctor.analyze.advice.periodic_loops import model_calls, sampled_text
from torchdoctor.analyze.advice.periodic_steps import (
    LOOP_CALLS,
    MIN_STEPS,
    PHASE_WORK,
    RARE_LONG,
    long_steps,
    phase_extra,
)

#: the single long step's extra time, as a share of the run, worth a word
MIN_SHARE = 0.05
#: light steps that tell a long step its model calls name an evaluation (others need
#: MIN_STEPS and RARE_LONG x the median: DETR's 2-epoch run, 7 light steps, its epoch-end
#: evaluate() at 3.3x the median and 13% of the run)
EVALUATION_MIN_STEPS = 5
_EVALUATION_FIX = (
    "It is an evaluation: it runs again whenever the loop evaluates (each epoch, every N "
    "steps), at this cost. Evaluate less often or on a subset of the evaluation set, or in "
    "another process; then per model call: a larger batch if its batches are small (each call "
    "pays Python and dispatch overhead, on a GPU a launch per kernel, whatever its batch), and "
    "torch.inference_mode() if it runs with autograd on. If it runs once (a final "
    "evaluation), it is a fixed cost that a longer run dilutes."
)
#: ... model calls outside the training step made in training mode (a diffusion pipeline's
#: sampling between epochs: 25 denoiser calls)
_SAMPLING_FIX = (
    " Its extra model calls ran in training mode: if they sample or generate (a pipeline's "
    "denoising loop), run them with the model in eval mode under torch.no_grad() (no graph, "
    "dropout off), with fewer inference steps, or less often."
)
#: ... most of it loading the batches of its own loop (dlrm's test batches: 200 ms of host
#: work each against 58 ms of model)
_LOADING_FIX = (
    " Most of its time is making its batches: make the evaluation set once and keep it (a "
    "fixed tensor or a cached dataset) instead of per call, give its DataLoader workers, or "
    "evaluate on fewer batches."
)
_OTHER_FIX = (
    "If it runs once (a final evaluation, saving the model), it is a fixed cost that a longer "
    "run dilutes. If it repeats on a schedule this run was too short to show (each epoch, "
    "every N minutes: an evaluation, a checkpoint, sample generation), it costs this much each "
    "time: run it less often, make it cheaper (a smaller evaluation set, a larger evaluation "
    "batch, torch.inference_mode(), an asynchronous checkpoint), or move it to another process."
)


def single_long_step(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when a single step (after the first two) took >= RARE_LONG x the median and
    its extra time is >= MIN_SHARE of the run (see the module docstring).

    Example:
        >>> steps = [{"index": i, "wall_ms": 90.0 if i == 5 else 10.0, "phases": {"other": 1.0}}
        ...          for i in range(12)]
        >>> steps[5]["phases"] = {"other": 81.0}
        >>> single_long_step({"steps": steps})[0].title
        'Step 5 of 12 took 9.0x the median: work between steps is 40% of the run'
    """
    found = long_steps(session, min_steps=EVALUATION_MIN_STEPS)
    if found is None or len(found.long) != 1:
        return []
    recorded, steps, (step,), median, _ = found
    if step.get("unkept"):  # (a sampled run's step the list left out: its wall time alone)
        return []
    wall, among = float(step["wall_ms"]), found.run_steps(session)
    extra, total = wall - median, found.run_ms(session) + step.get("detailed_wall_ms", wall) - wall
    calls = model_calls(step, steps)
    evaluation = calls is not None and calls[1] >= 0.5 * (calls[0] - calls[2])
    # (an evaluation its model calls name needs no 4x to stand out from noise: DETR's epoch-end
    # evaluate() took 3.3x the median, 13% of the run, on a busy machine)
    if not evaluation and (wall < RARE_LONG * median or len(steps) < MIN_STEPS):
        return []
    if extra < MIN_SHARE * total:
        return []
    phases = phase_extra([step], steps)
    phase = max(phases, key=lambda p: phases[p])
    looping = calls is not None and calls[0] >= LOOP_CALLS * max(1, calls[2])
    if phase == "data" and not (evaluation or looping):
        return []  # (a loader's workers started again: the data-loading rule's)
    loading = phases["data"] if phase == "data" else 0.0  # (an evaluation's own loader:
    phase = "other" if phase == "data" else phase  # dlrm's test loop, in training mode)
    share, ratio = 100.0 * extra / total, wall / median
    head = f"Step {step.get('index', '?')} of {among} took {ratio:.1f}x the median"
    host = extra_split([step], steps)
    off = off_core(host, typical_wait_rate(steps))
    if host is not None and off is not None and not evaluation:  # (waiting: the machine was
        return [off_core_advice(off, host, head, share, [step], among, median,  # busy)
                                extra / among)]  # fmt: skip
    where = "between steps" if phase == "other" else f"in the {phase} phase"
    if evaluation:
        assert calls is not None
        title = (f"{head}: an evaluation {where} ({calls[1]} model calls in eval mode, against "
                 f"{calls[2]} in a typical step) is {share:.0f}% of the run")  # fmt: skip
    else:
        title = f"{head}: work {where} is {share:.0f}% of the run"
    evidence = [
        f"step {step.get('index', '?')} (of {among}): {fmt_ms(wall)} against a median "
        f"step of {fmt_ms(median)}" + numbering_note(session),
        f"its extra time, {fmt_ms(extra)} ({share:.0f}% of the run), is {PHASE_WORK[phase]}",
    ]
    if calls is not None and not evaluation:
        evidence.append(f"it called the model {calls[0]} times against {calls[2]} in a typical "
                        "step, in training mode")  # fmt: skip
    if loading:
        evidence.append(f"{fmt_ms(loading)} of its extra time is data loading inside it: the "
                        "batches of its own loop over a loader (an evaluation set's)")  # fmt: skip
    if step.get("detailed"):  # (left out of the tree: what its model calls ran under)
        evidence.append(sampled_text(session))
    if host is not None and host.cpu_ms < 0.7 * host.wall_ms:
        evidence.append(split_evidence(host))
    per_step = extra / among
    return [Advice(
        rule="long-step",
        title=title,
        confidence="low",  # (one step: whether it comes back is not seen in this run)
        evidence=evidence,
        fix=(_EVALUATION_FIX if evaluation else _OTHER_FIX + (
            _SAMPLING_FIX if calls is not None and calls[0] > 2 * max(1, calls[2]) and not loading
            else "")) + (_LOADING_FIX if loading else ""),
        estimated_saving_ms=per_step / 2,  # (half of it, averaged over the run's steps)
        saving_range_ms=(per_step / 2, per_step),
        references=["torch.inference_mode"],
        cause="periodic-work",
        heat=min(1.0, extra / total),
    )]
