"""Rule ``optimizer-step``: ``optimizer.step()`` takes a sizable share of the step while the
optimizer runs without its fused implementation.

Each optimizer's settings are noted at its first step (``environment["optimizers"]``:
``collect/engine_state.optimizer_settings``): its class, whether the class has a fused kernel
for its parameters' device (Adam, AdamW, SGD, Adagrad on CPU and CUDA), and the ``fused`` it
was given. When the optimizer phase is at least MIN_SHARE (5%) of the step and such an optimizer
runs unfused (nanoGPT's ``configure_optimizers`` asks for fused on CUDA only), the advice is
``fused=True``. The saving is Amdahl over the optimizer phase with the speedup measured in the
``fused`` benchmark suite on CPU for its class (foreach vs fused; SGD without momentum gains
nothing there and is not advised); on CUDA that figure is not stated,
``torchdoctor tune`` measures it (knob ``fused_optimizer``), and a tune that did replaces this.

Example:
    >>> session = {"step_ms": {"mean": 100.0}, "phases": {"optimizer": {"mean": 30.0}},
    ...            "environment": {"device": "cpu", "optimizers": [{"type": "AdamW",
    ...                "fused_supported": True, "fused": None, "device": "cpu",
    ...                "numel": 124_000_000}]}}
    >>> [(a.rule, round(a.estimated_saving_ms, 1)) for a in optimizer_step(session)]
    [('optimizer-step', 23.3)]
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    SPEEDUPS,
    Advice,
    Speedup,
    advice_step_ms,
    center,
    fmt_ms,
    is_cuda,
    median,
    pct,
    tree_step_ms,
    with_saving,
)
from torchdoctor.analyze.advice.knobs_measured import tune_rows

#: the optimizer phase must take at least this share of the step
MIN_SHARE = 0.05


def optimizer_step(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when unfused optimizers with a fused implementation take >= MIN_SHARE.

    Example:
        >>> optimizer_step({})  # (a session without the evidence this rule reads)
        []
    """
    step = tree_step_ms(session)
    stat = (session.get("phases") or {}).get("optimizer")
    # the typical step's optimizer time: a fused kernel saves that on every step, and one
    # stalled step in a window of 5 (nanoGPT: 84 ms against 0.8 ms) must not make the mean
    # the remedy's size
    phase = min(center(stat), median(stat)) if median(stat) > 0 else center(stat)
    update, closure = update_ms(session), False
    if update is not None and update > 0:  # (the optimizers' own updates, every step, after
        # any closure: Lightning's bookkeeping around the training step runs in the optimizer
        # phase, a fused kernel shortens the update alone: an autoencoder's phase 1.0 ms, its
        # Adam step 0.56 ms foreach, 0.19 ms fused; SAC's alternating steps, 0.6 and 2.2 ms,
        # read 0.69 ms from the detailed steps' median and got no advice)
        # (less than the phase, and a closure ran in it: pytorch-tabnet's loop calls step()
        # with none, its detailed phase longer by the profiler's timers, and read "runs its
        # closure first")
        closure = update < 0.9 * phase and any(
            s.get("closure") for s in session.get("steps") or ())
        phase, step = update, advice_step_ms(session) or step
    light = light_optimizer_ms(session) if update is None else None
    if light is not None and 0 < light < phase:  # (the detailed steps' phase holds the hot
        # lines' timers on the optimizer's torch calls: a Lightning AE's 1.03 ms detailed
        # against 0.27 ms saved, measured); its share: of the step without the profiler
        phase, step = light, advice_step_ms(session) or step
    if step <= 0 or phase < MIN_SHARE * step:
        return []
    if any(row.get("knob") == "fused_optimizer" for row in tune_rows(session)):
        return []  # measured by torchdoctor tune: its own advice says how much
    environment = session.get("environment") or {}
    gains = [(o, speedup) for o in environment.get("optimizers") or ()
             if o.get("fused_supported") and not o.get("fused")
             and (speedup := fused_speedup(o)) is not None]  # fmt: skip
    if not gains:
        return []
    unfused = [o for o, _ in gains]
    types = sorted({str(o.get("type")) for o in unfused})
    names = ", ".join(types)
    numel = sum(int(o.get("numel") or 0) for o in unfused)
    cuda = is_cuda(session)
    _, speedup = max(gains, key=lambda pair: int(pair[0].get("numel") or 0))  # (the largest's)
    fix, code = fused_fix(types[0], {o.get("driver") for o in unfused}, cuda,
                          forecasting_model(session))  # fmt: skip
    advice = Advice(
        rule="optimizer-step",
        title=f"optimizer.step() takes {pct(phase, step):.0f}% of the step: run {names} with "
        "fused=True",
        confidence="medium" if not cuda else "low",
        evidence=[
            (f"the optimizer's own update is {fmt_ms(phase)} per step ({pct(phase, step):.0f}%)"
             ": optimizer.step() runs its closure first (the training step, the framework's "
             "bookkeeping around it), which a fused kernel leaves as it is"
             if update is not None and closure else
             f"the optimizers' updates take {fmt_ms(phase)} per step ({pct(phase, step):.0f}%, "
             "the mean over the steps)" if update is not None else
             f"the optimizer phase is {fmt_ms(phase)} per step ({pct(phase, step):.0f}%)"),
            f"{names} over {numel:,} parameters runs unfused (foreach or a loop over the "
            "parameters); its class has a fused kernel for this device: one kernel for all",
            f"measured: {speedup.source}"
            + ("; on CUDA the gain differs: `torchdoctor tune SCRIPT` measures it" if cuda else ""),
        ],
        fix=fix,
        code=code,
        references=[f"torch.optim.{name}" for name in types],  # (the classes advised)
        cause="fused_optimizer",
        heat=min(1.0, phase / step),
    )
    if not cuda:
        with_saving(advice, step, phase / step, speedup)
    return [advice]


#: a step's update this many times the median is a stall (a page fault, a busy machine), left
#: out of the typical update
STALL = 4.0


def update_ms(session: Mapping[str, Any]) -> float | None:
    """The typical step's optimizer updates (``steps[i].update_ms``: from the end of the step's
    closure, if any, to the end of ``optimizer.step()``): their mean over the steps, stalls
    (over :data:`STALL` x the median) left out; None with fewer than :data:`MIN_LIGHT_STEPS`
    steps that have one. The mean, not the median: steps that alternate (SAC updates its
    critics every step and its actor every other) cost their average.

    Example:
        >>> update_ms({"steps": [{"update_ms": 0.2}] * 5 + [{"update_ms": 9.0}]})
        0.2
        >>> update_ms({"steps": [{"update_ms": 0.6}, {"update_ms": 2.2}] * 4})
        1.4
    """
    values = [float(s["update_ms"]) for s in session.get("steps") or ()
              if isinstance(s.get("update_ms"), (int, float)) and s["update_ms"] > 0]  # fmt: skip
    if len(values) < MIN_LIGHT_STEPS:
        return None
    kept = [v for v in values if v <= STALL * statistics.median(values)]
    return round(sum(kept) / len(kept), 6)


#: light steps with an optimizer phase that make its median the typical one
MIN_LIGHT_STEPS = 5


def light_optimizer_ms(session: Mapping[str, Any]) -> float | None:
    """The median optimizer phase of the light steps (no hooks, no line timers: the phase as
    it runs unprofiled), None with fewer than :data:`MIN_LIGHT_STEPS` of them.

    Example:
        >>> steps = [{"detailed": False, "phases": {"optimizer": 0.3}}] * 5
        >>> light_optimizer_ms({"steps": steps + [{"detailed": True, "phases": {"optimizer": 1.0}}]})
        0.3
    """
    values = [
        float((s.get("phases") or {}).get("optimizer") or 0.0)
        for s in session.get("steps") or ()
        if s.get("detailed") is False and float((s.get("phases") or {}).get("optimizer") or 0.0) > 0
    ]  # fmt: skip
    return statistics.median(values) if len(values) >= MIN_LIGHT_STEPS else None


#: the measured foreach-vs-fused speedup per optimizer class (BENCHMARKS.md suite 'fused');
#: classes not measured there take AdamW's
#: parameters under which an Adam/AdamW step gains what a tiny network's did (2.2-2.4x, not
#: the 3.4-6.7x of 2.6M parameters and more)
SMALL_NUMEL = 500_000
FUSED_SPEEDUPS = {"AdamW": "fused_optimizer", "Adam": "fused_adam", "Adagrad": "fused_adagrad",
                  "SGD": "fused_sgd_momentum"}  # fmt: skip


def fused_speedup(optimizer: Mapping[str, Any]) -> Speedup | None:
    """What ``fused=True`` measured against ``foreach`` for this optimizer's class, or None when
    it gains nothing: SGD without momentum (its update is one add per parameter, which foreach
    already batches: 0.98-1.12x). A session from before ``momentum`` was noted counts as with.

    Example:
        >>> fused_speedup({"type": "SGD", "momentum": 0.0}) is None
        True
        >>> fused_speedup({"type": "SGD", "momentum": 0.9}) is SPEEDUPS["fused_sgd_momentum"]
        True
        >>> fused_speedup({"type": "Adam", "numel": 134_658}).low  # an RL agent's tiny networks
        2.23
    """
    kind = str(optimizer.get("type"))
    if kind == "SGD" and "momentum" in optimizer and not optimizer.get("momentum"):
        return None
    if kind in ("Adam", "AdamW") and 0 < int(optimizer.get("numel") or 0) < SMALL_NUMEL:
        return SPEEDUPS["fused_adam_small"]  # (tiny networks: per-tensor work, less to fuse)
    return SPEEDUPS[FUSED_SPEEDUPS.get(kind, "fused_optimizer")]


def forecasting_model(session: Mapping[str, Any]) -> str | None:
    """The class of the run's outermost module when pytorch-forecasting defines it (its models
    build their optimizer from ``optimizer_params``), else None.

    Example:
        >>> node = {"type": "NBeats", "source": {"file": "/x/pytorch_forecasting/models/n.py"}}
        >>> forecasting_model({"tree": {"children": [node]}}), forecasting_model({})
        ('NBeats', None)
    """
    for node in (session.get("tree") or {}).get("children") or ():
        if "/pytorch_forecasting/" in str((node.get("source") or {}).get("file") or ""):
            return str(node.get("type"))
    return None


def fused_fix(
    kind: str, drivers: set[Any], cuda: bool, forecasting: str | None = None
) -> tuple[str, str]:
    """The fix and its code for an unfused ``torch.optim.<kind>``, where the loop that steps it
    takes its settings from (``drivers``: the optimizers' ``driver``; the Hugging Face Trainer
    builds the optimizer from ``TrainingArguments.optim``, Lightning from the module's
    ``configure_optimizers``, a script's own loop where the script builds it).

    Example:
        >>> fused_fix("AdamW", {"transformers"}, cuda=False)[1]
        'TrainingArguments(..., optim="adamw_torch_fused")'
        >>> fused_fix("SGD", {None}, cuda=True)[1]
        'optimizer = torch.optim.SGD(model.parameters(), lr=lr, fused=True)'
    """
    measure = " Measure it on your step: torchdoctor tune SCRIPT."
    where = (
        ""
        if cuda
        else (
            " (fused kernels run on the CPU too: a test that asks for them on "
            "CUDA only keeps them off here)"
        )
    )
    if drivers == {"transformers"}:
        if kind == "AdamW":
            return (
                "the Trainer builds the optimizer from TrainingArguments: "
                'TrainingArguments(..., optim="adamw_torch_fused").' + measure,
                'TrainingArguments(..., optim="adamw_torch_fused")',
            )
        return (
            f"pass the Trainer an optimizer built with fused=True: Trainer(..., "
            f"optimizers=(torch.optim.{kind}(model.parameters(), ..., fused=True), None))."
            + measure,
            f"optimizers=(torch.optim.{kind}(model.parameters(), lr=lr, fused=True), None)",
        )
    if drivers == {"lightning"} and forecasting and kind in ("Adam", "AdamW", "SGD"):
        return (  # (pytorch-forecasting passes optimizer_params to torch.optim's class)
            "pytorch-forecasting builds the optimizer from the model's optimizer_params: "
            f'{forecasting}.from_dataset(..., optimizer_params={{"fused": True}}).'
            + measure,
            f'net = {forecasting}.from_dataset(training, ..., optimizer_params={{"fused": True}})',
        )
    if drivers == {"lightning"}:
        return (
            f"build it with fused=True in the LightningModule's configure_optimizers{where}."
            + measure,
            f"return torch.optim.{kind}(self.parameters(), lr=self.lr, fused=True)",
        )
    if drivers == {"stable_baselines3"}:  # (the policy builds it from optimizer_kwargs)
        return (
            "stable-baselines3 builds the optimizer from the policy's optimizer_kwargs: "
            "Model(..., policy_kwargs=dict(optimizer_kwargs=dict(fused=True)))." + measure,
            "model = SAC(\"MlpPolicy\", env, policy_kwargs=dict(optimizer_kwargs=dict(fused=True)))",
        )
    return (
        f"pass fused=True where the script builds the optimizer{where}." + measure,
        f"optimizer = torch.optim.{kind}(model.parameters(), lr=lr, fused=True)",
    )
