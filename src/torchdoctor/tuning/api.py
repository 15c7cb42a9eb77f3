"""``torchdoctor.tune(step_fn, model=..., optimizer=...)``: knob trials on a step function.

The trials run in this process (a step function cannot be handed to another one): each trial
restores the model's and optimizer's state saved at the start, sets the seed, turns its knob on
through the same hooks as ``torchdoctor tune`` (``tuning/harness.py``), calls ``step_fn``
``warmup + steps`` times (each call is one step; a returned tensor is the value compared for
drift when no ``backward()`` ran), then undoes the knob. Baseline and knob trials alternate;
the result is a Session like the command's (``session["tune"]``, measured advice).

Example:
    >>> import torch, torchdoctor
    >>> net = torch.nn.Linear(8, 1)
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> x = torch.randn(16, 8)
    >>> def step():
    ...     opt.zero_grad()
    ...     loss = net(x).pow(2).mean()
    ...     loss.backward()
    ...     opt.step()
    ...     return loss
    >>> session = torchdoctor.tune(step, model=net, optimizer=opt, knobs=["foreach_optimizer"],
    ...                            steps=3, warmup=1, rounds=1)
    >>> [row["knob"] for row in session["tune"]["rows"]]
    ['foreach_optimizer']
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from torchdoctor.collect.script import StopScript
from torchdoctor.session import Session
from torchdoctor.tuning.evaluate import combination, knob_row, knob_rows
from torchdoctor.tuning.harness import Trial, _rss_bytes, _seed
from torchdoctor.tuning.knobs import KNOB_BY_NAME, KNOBS, snippet
from torchdoctor.tuning.stats import drift, measured_ms, trial_ms

#: knobs that act where the step function does not: outside it
_NOT_IN_PROCESS = {"dataloader_workers": "the DataLoader is built outside the step function",
                   "malloc_cache": "glibc reads its malloc settings when the process starts: "
                   "`torchdoctor tune script.py` tries it in a fresh process"}  # fmt: skip


class _State:
    """The model's and optimizer's state at the start, restored before every trial."""

    def __init__(self, model: torch.nn.Module | None, optimizer: Any) -> None:
        self.model, self.optimizer = model, optimizer
        self.model_state = copy.deepcopy(model.state_dict()) if model is not None else None
        self.optimizer_state = (copy.deepcopy(optimizer.state_dict())
                                if optimizer is not None else None)  # fmt: skip

    def restore(self) -> None:
        if self.model is not None:
            for module in self.model.modules():
                module._compiled_call_impl = None
            self.model.to(memory_format=torch.contiguous_format)
            self.model.load_state_dict(self.model_state)
        if self.optimizer is not None:
            self.optimizer.__dict__.pop("step", None)  # the fp16 knob's GradScaler wrapper
            self.optimizer.load_state_dict(copy.deepcopy(self.optimizer_state))


def _one_trial(step_fn: Callable[[], Any], names: Sequence[str], state: _State, *, warmup: int,
               steps: int, seed: int) -> dict[str, Any]:  # fmt: skip
    state.restore()
    _seed(seed)
    trial = Trial({"knobs": list(names), "warmup": warmup, "steps": steps})
    rss = _rss_bytes()
    started = time.perf_counter_ns()
    error = None
    trial.install()
    try:
        trial.watch.step_end()
        while True:
            output = step_fn()
            if not trial.backward_count and isinstance(output, torch.Tensor):
                trial.watch.record(output if output.numel() == 1 else output.float().sum())
            trial.watch.step_end()
    except StopScript:
        pass
    except Exception as exc:  # the knob broke the step: a failed trial, said in its row
        error = f"{type(exc).__name__}: {exc}"
    finally:
        trial.remove()
    watch = trial.watch
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    first = watch.marks[0][0] if watch.marks else started
    return {"knobs": list(names), "error": error, "warmup": warmup, "step_ms": watch.step_ms(),
            "values": watch.recorded_values(), "startup_s": (first - started) / 1e9,
            "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda
            else max(0, _rss_bytes() - rss), "observed": trial.observed(),
            "graph_breaks": trial.breaks(), "mode": "step_fn"}  # fmt: skip


def tune(
    step_fn: Callable[[], Any],
    *,
    model: torch.nn.Module | None = None,
    optimizer: Any = None,
    knobs: Sequence[str] | None = None,
    steps: int = 10,
    warmup: int = 2,
    rounds: int = 2,
    tolerance: float = 0.05,
    seed: int = 0,
) -> Session:
    """Measure engine knobs on ``step_fn`` (see the module docstring); returns a Session.

    Example:
        >>> import torch
        >>> net, x = torch.nn.Linear(8, 1), torch.randn(16, 8)
        >>> def predict():
        ...     with torch.no_grad():
        ...         return net(x).sum()
        >>> session = tune(predict, model=net, knobs=["inference_mode"], steps=3, warmup=1, rounds=1)
        >>> row = session["tune"]["rows"][0]
        >>> row["knob"], row["status"], row["trials"], row["drift"]
        ('inference_mode', 'measured', 1, 0.0)
    """
    if not callable(step_fn):
        raise TypeError(f"step_fn must be callable (one training or inference step), got "
                        f"{type(step_fn).__name__}")  # fmt: skip
    names = list(knobs) if knobs is not None else [k.name for k in KNOBS if not k.hidden]
    unknown = [n for n in names if n not in KNOB_BY_NAME]
    if unknown:
        raise ValueError(f"unknown knob(s) {unknown}; the knobs are: "
                         f"{[k.name for k in KNOBS if not k.hidden]}")  # fmt: skip
    state = _State(model, optimizer)
    run = {"warmup": warmup, "steps": steps, "seed": seed}
    try:
        probe = _one_trial(step_fn, [], state, **run)
        observed = probe["observed"]
        skipped = {
            n: reason
            for n in names
            if (reason := _NOT_IN_PROCESS.get(n) or KNOB_BY_NAME[n].applies(observed))
        }
        candidates = [n for n in names if n not in skipped]
        pairs: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {n: [] for n in candidates}
        baselines = []
        for _ in range(rounds):
            for name in candidates:
                base = _one_trial(step_fn, [], state, **run)
                baselines.append(base)
                pairs[name].append((base, _one_trial(step_fn, [name], state, **run)))
        drifts = [d for b in baselines if (d := drift(b["values"], probe["values"])) is not None]
        baseline_drift = max(drifts) if drifts else None
        rows = knob_rows(names, skipped, pairs, baseline_drift=baseline_drift,
                         tolerance=tolerance)  # fmt: skip
        chosen = combination(rows)
        combo = None
        if len(chosen) > 1:
            combo_pairs = [(_one_trial(step_fn, [], state, **run),
                            _one_trial(step_fn, chosen, state, **run)) for _ in range(2)]  # fmt: skip
            combo = knob_row("+".join(chosen), combo_pairs,
                             baseline_drift=baseline_drift, tolerance=tolerance,
                             title="combination: " + " + ".join(chosen))  # fmt: skip
            if not combo["accepted"]:
                chosen = chosen[:1]
    finally:
        state.restore()
    for row in rows:
        if row["status"] == "measured":
            row["snippet"] = snippet(KNOB_BY_NAME[row["knob"]], observed)
    from torchdoctor.tuning.session import tune_session

    return tune_session({
        "script": getattr(step_fn, "__qualname__", "step_fn"), "args": [], "rows": rows,
        "combination": combo, "chosen": chosen, "tolerance": tolerance, "observed": observed,
        "snippet": "\n".join(snippet(KNOB_BY_NAME[k], observed) for k in chosen),
        "baseline": {"step_ms": trial_ms(probe), "steps_ms": measured_ms(probe),
                     "drift": baseline_drift, "mode": "step_fn",
                     "peak_memory_bytes": probe.get("peak_memory_bytes")},
        "plan": {"rounds": rounds, "steps": steps, "warmup": warmup}, "notes": [],
        "interrupted": False,
    })  # fmt: skip
