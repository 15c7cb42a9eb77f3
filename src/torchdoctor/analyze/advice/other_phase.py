"""Rule ``between-steps``: the loop's own work outside forward, backward, the optimizer and
data loading (the ``other`` phase) takes a sizable share of the step. Rule
``python-outside-torch``: in the forward phase, Python outside any torch call and any module
(``session["python_lines"]``: an RL environment's step, tokenizing in the loop) does.

Checkpoints written every step, an explicit ``gc.collect()``, metrics and logging make no torch
call the hot lines could time; the profiler samples the user lines of that phase in detailed
steps (``session["other_lines"]``, ``collect/other_sampler.py``). Each line taking at least
MIN_SHARE of the step gets one advice with its measured time; the remedy depends on what the
line calls (one table, :data:`REMEDIES`): doing it every N steps saves ``(1 - 1/N)`` of it.

Example:
    >>> session = {"step_ms": {"mean": 100.0}, "phases": {"other": {"mean": 80.0}},
    ...            "other_lines": [{"file": "/w/train.py", "line": 9, "location": "train.py:9",
    ...                             "code": "torch.save(state, path)", "ms_per_step": 70.0}]}
    >>> [(a.rule, round(a.estimated_saving_ms)) for a in between_steps(session)]
    [('between-steps', 63)]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    Advice,
    center,
    fmt_ms,
    location,
    one_step_run,
    pct,
    tree_step_ms,
)
from torchdoctor.analyze.advice.compiled_lines import COMPILED_FIX, compiled_code
from torchdoctor.analyze.advice.hot_lines_data import measured_lines

#: a sampled line taking at least this share of the step is advised (at most MAX_ADVICE)
MIN_SHARE = 0.05
MAX_ADVICE = 3
#: a line sampled in under half the detailed steps is periodic work when it took this much
#: in each step it was seen in (many ticks at once), not a tick now and then
RARE_LUMP_MS = 20.0
#: the periodic remedies do the work once every EVERY steps
EVERY = 10

#: what a sampled line calling zero_grad() or backward() is: the step's own work, no saving
#: (t_meta_lazy's `opt.zero_grad(); loss.backward(); opt.step()` was told "do it every 10 steps")
STEP_CALLS = (
    "the training step's own calls (zero_grad, and the bookkeeping around backward and step)"
)

#: (texts in the line, what it is, the fix); first match; the last one matches any line
REMEDIES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("torch.save(", "save_pretrained(", "save_checkpoint(", ".save("),
        "a checkpoint written every step",
        f"Save every {EVERY} steps or more (`if step % {EVERY} == 0:`), or hand the state to a "
        "background thread (copy it to CPU first); keep the last checkpoint on exit only.",
    ),
    (
        ("gc.collect(",),
        "an explicit garbage collection every step",
        "Remove the gc.collect() from the loop: Python's collector runs by itself (call "
        f"gc.collect() every {EVERY * 10} steps at most if memory really grows, or gc.freeze() "
        "after the model is built).",
    ),
    (
        ("savefig(", "save_image(", "plt.", "imshow(", ".plot(", "add_figure(", "add_image("),
        "a figure drawn and saved every step",
        f"Draw it every {EVERY} steps or more (`if step % {EVERY} == 0:`) or once at the end "
        "from the values you keep (a file name that changes per step still works under the "
        "`if`); with matplotlib, draw into one figure (`fig.clf()`) instead of a new one per "
        "step, and write files with the Agg backend (`matplotlib.use(\"Agg\")`).",
    ),
    (
        ("print(", "log(", "logger.", "logging.", "wandb.", "mlflow.", "writer.add_"),
        "logging every step",
        f"Log every {EVERY} steps: keep the values as device tensors (torchdoctor.train."
        "LazyMetrics) and format them only when you print.",
    ),
    (
        (".zero_grad(", ".backward("),
        STEP_CALLS,
        "The line runs the training step itself: what falls between steps on it is "
        "zero_grad() and the bookkeeping around backward() and step() (hooks, a "
        "learning-rate scheduler), which every step needs; running it less often would change "
        "the training. If zero_grad(set_to_none=False) is called, drop the argument (the "
        "default frees the gradients instead of writing zeros over each).",
    ),
    (
        ("",),
        "work the loop does between steps",
        f"Move it out of the loop if it does not change per step, or do it every {EVERY} steps.",
    ),
)


def _remedy(code: str, table: tuple = REMEDIES) -> tuple[str, str]:
    """What the line is and its fix: the first row of ``table`` with a text in the line."""
    for texts, what, fix in table:
        if any(text in code for text in texts):
            return what, fix
    return table[-1][1], table[-1][2]


def _through(row: Mapping[str, Any]) -> list[str]:
    """Evidence lines for the library frames a sampled line called into (at most 2)."""
    return [
        f"through {os.path.basename(str(v.get('file')))}:{v.get('line')} "
        f"({v.get('function')}): {fmt_ms(float(v.get('ms_per_step') or 0))}"
        for v in (row.get("via") or ())[:2]
    ]


def _between(session: Mapping[str, Any]) -> str:
    """Where the other phase lies: after a training loop's optimizer step, else (an inference
    loop) between one step's end and the next.

    Example:
        >>> _between({"phases": {"optimizer": {"median": 1.5}}})
        'between optimizer.step() and the next forward'
        >>> _between({"phases": {"optimizer": {"median": 0.0}}})
        'between steps'
    """
    optimizer = center((session.get("phases") or {}).get("optimizer"))
    return "between optimizer.step() and the next forward" if optimizer > 0 else "between steps"


def between_steps(session: Mapping[str, Any]) -> list[Advice]:
    """One advice per sampled line of the ``other`` phase taking >= MIN_SHARE of the step.

    Example:
        >>> between_steps({})  # (a session without the evidence this rule reads)
        []
    """
    step = tree_step_ms(session)  # (the detailed steps', as the sampled lines and phases)
    other = center((session.get("phases") or {}).get("other"))
    if step <= 0 or other < MIN_SHARE * step or one_step_run(session):
        return []
    advice = []
    timed = {(str(r["file"]), r["line"]) for r in measured_lines(session)
             if float(r.get("torch_calls_per_step") or 0.0) > 0}  # fmt: skip
    for row in (session.get("other_lines") or ())[:MAX_ADVICE]:
        ms = float(row.get("ms_per_step") or 0.0)
        if ms < MIN_SHARE * step or row.get("encloses_loop"):
            continue  # (a line running a library's loop: rule library-loop names its lines)
        code = str(row.get("code") or "")
        what, fix = _remedy(code)
        step_calls = what == STEP_CALLS
        if fix == REMEDIES[-1][2] and (str(row.get("file")), row.get("line")) in timed:
            continue  # (its torch calls are a hot line's: that advice says what they are;
            # cleanrl c51's per-row index_add_ loop was told "do it every 10 steps")
        compiled = compiled_code(row, ms)  # (its kernels: not work to do less often)
        if compiled:
            what, fix = "code torch.compile generated, outside any module call", COMPILED_FIX
        saving = None if compiled or step_calls else ms * (1.0 - 1.0 / EVERY)
        where = str(row.get("location") or "?")
        seen, sampled = int(row.get("steps_seen") or 0), int(row.get("steps_sampled") or 0)
        # (DCGAN's sample images at an epoch's iteration 0: 46 ms in 1 of 11 steps; work of
        # every step sampled sparsely, stable-baselines3's rollouts, is a tick now and then)
        rare = 0 < 2 * seen < sampled and ms * sampled / seen >= RARE_LUMP_MS
        gate = row.get("gate")
        if gate:  # (o_sparse_param's torch.save under `if i % 10 == 0` read "every step")
            rare = True
            what = what.replace(" every step", "") + (
                f" under `if {gate}`: work of some steps only, sampled in {seen} of the "
                f"{sampled} detailed steps")  # fmt: skip
            fix = (f"It runs under `if {gate}`: already less often than every step. Each "
                   f"time it runs it costs about {fmt_ms(ms * sampled / max(seen, 1))}: leave "
                   "it, or run it less often or in a background thread; the periodic-steps "
                   "advice, when there is one, measures it over all the steps.")  # fmt: skip
            saving = None
        elif rare:
            what = what.replace(" every step", "") + (
                f" in {seen} of the {sampled} detailed steps only ({fmt_ms(ms * sampled / seen)}"
                " each time): periodic or one-off work, whose share of the run these steps "
                "cannot tell")  # fmt: skip
            fix = (f"It ran in {seen} of {sampled} detailed steps: it is already done less often "
                   "than every step (or once). If it runs every N steps, it costs "
                   f"{fmt_ms(ms * sampled / seen)} / N per step: leave it, or do it less often "
                   "or in a background thread; the periodic-steps advice, when there is one, "
                   "measures it over all the steps.")  # fmt: skip
            saving = None
        advice.append(
            Advice(
                rule="between-steps",
                title=f"{where} takes {pct(ms, step):.0f}% of the step ({fmt_ms(ms)}) "
                f"{_between(session)}: {what}",
                estimated_saving_ms=saving,
                saving_range_ms=None if saving is None else [saving, ms],
                confidence="low" if rare or step_calls else "high",
                evidence=[
                    f"{where} `{code}`: {fmt_ms(ms)} per step, sampled in the other phase of "
                    "the detailed steps (it makes no torch call a hot line could time)",
                    *_through(row),
                    f"the other phase (outside forward, backward, optimizer and data) is "
                    f"{fmt_ms(other)} per step ({pct(other, step):.0f}%)",
                    *([] if saving is None else
                      [f"doing it every {EVERY} steps saves {fmt_ms(saving)} per step"]),
                ],  # fmt: skip
                fix=fix,
                locations=[location(row.get("file"), row.get("line"))],
                heat=min(1.0, ms / step),
            )
        )
    return advice


#: (texts in the line, what it is, the fix) for Python outside torch; first match, the last any
PYTHON_REMEDIES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("env.step(", "envs.step(", "env.reset(", "envs.reset("),
        "an environment stepped one at a time",
        "Step many environments per policy call: gymnasium.vector.AsyncVectorEnv (the "
        "environments' Python in worker processes) or SyncVectorEnv, so each forward serves a "
        "batch of observations; or a simulator that runs on the device.",
    ),
    (
        ("tokeniz", ".encode(", ".decode(", "batch_decode("),
        "text processing in the loop",
        "Tokenize in the Dataset (DataLoader workers) or once ahead of training; decode "
        "generated text once at the end, not per token or per step.",
    ),
    (
        ("",),
        "Python work the step waits for",
        "Vectorize it (one NumPy or torch op over the batch instead of per item), move it into "
        "a DataLoader worker or a background thread, or cache its result when its inputs repeat.",
    ),
)


def python_outside_torch(session: Mapping[str, Any]) -> list[Advice]:
    """One advice per line of ``session["python_lines"]`` taking >= MIN_SHARE of the step
    that the hot lines do not already explain (a line whose measured torch calls and Python
    between them take at least half its sampled time is advised as a hot line).

    Example:
        >>> session = {"step_ms": {"mean": 100.0}, "python_lines": [{"file": "/w/rl.py",
        ...     "line": 12, "location": "rl.py:12", "code": "obs, r, done, _, _ = env.step(a)",
        ...     "ms_per_step": 40.0, "via": []}]}
        >>> [(a.rule, a.title.split(": ")[-1]) for a in python_outside_torch(session)]
        [('python-outside-torch', 'an environment stepped one at a time')]
    """
    step = tree_step_ms(session)
    if step <= 0 or one_step_run(session):
        return []
    timed = {(row["file"], row["line"]): row["total_ms"] for row in measured_lines(session)}
    # (a line calling the model: a tick taken as its call returns carries the model's own CPU
    # time, delivered late; nanoGPT's `logits, loss = model(X, Y)` read 9% in 1 run of 3)
    model_calls = {(r.get("file"), r.get("line")) for r in session.get("call_lines") or ()}
    advice = []
    for row in (session.get("python_lines") or ())[:MAX_ADVICE]:
        ms = float(row.get("ms_per_step") or 0.0)
        where = (row.get("file"), row.get("line"))
        if ms < MIN_SHARE * step or timed.get(where, 0.0) >= ms / 2 or where in model_calls:
            continue
        code = str(row.get("code") or "")
        what, fix = _remedy(code, PYTHON_REMEDIES)
        where = str(row.get("location") or "?")
        advice.append(
            Advice(
                rule="python-outside-torch",
                title=f"{where} runs Python outside torch for {pct(ms, step):.0f}% of the step "
                f"({fmt_ms(ms)}): {what}",
                estimated_saving_ms=ms,
                saving_range_ms=[ms / 2, ms],
                confidence="medium",
                evidence=[
                    f"{where} `{code}`: {fmt_ms(ms)} of CPU per step outside any torch call "
                    "and module, sampled in the forward phase of the detailed steps",
                    *_through(row),
                    "the saving is up to all of it (run elsewhere or batched, the step no "
                    "longer waits for it); the low end assumes half remains",
                ],
                fix=fix,
                locations=[location(row.get("file"), row.get("line"))],
                heat=min(1.0, ms / step),
            )
        )
    return advice
