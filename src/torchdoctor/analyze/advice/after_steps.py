"""Rule ``after-steps``: the model's work after the last step (a final generation or evaluation)
is a sizable share of the run, and it runs as training does: autograd on, dropout active.

The profiler counts the outermost model calls after the last complete step (the partial step it
drops at stop: ``config.run_time.after_calls``), how many with the model in eval mode and how
many with autograd on; the run's time after the steps is ``run_time.after_ms``. A script that
trains and then samples (Karpathy's ng-video-lecture ``gpt.py``: ``m.generate(...)`` right after
the loop) samples with the model in training mode and autograd on: every call builds a graph
nobody uses and runs dropout. Its final ``generate(max_new_tokens=500)``: 5.47 s as written,
3.32 s with ``model.eval()`` and ``torch.no_grad()``.

Example:
    >>> run = {"total_ms": 57_800.0, "after_ms": 6_060.0,
    ...        "after_calls": {"model_calls": 500, "eval_calls": 0, "grad_calls": 500}}
    >>> (advice,) = after_steps({"config": {"run_time": run}})
    >>> advice.title
    'After the last step, 500 model calls with autograd on and in training mode took 6,060 ms (10% of the run)'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_count, fmt_ms

#: the share of the run after the steps worth a word
MIN_SHARE = 0.05

_FIX = (
    "Run the work after the loop (a final generation, an evaluation) with the model in eval "
    "mode and autograd off: model.eval() and `with torch.no_grad():` (or "
    "torch.inference_mode()) around it. No graph is built for calls nobody differentiates, "
    "and dropout is off, as sampling and evaluating want it (ng-video-lecture's final "
    "generate(): 5.47 s as written, 3.32 s so). Call model.train() again if training goes on."
)


def after_steps(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when the model calls after the last step ran with autograd on or in
    training mode and the time after the steps is >= :data:`MIN_SHARE` of the run.

    Example:
        >>> run = {"total_ms": 100.0, "after_ms": 50.0,
        ...        "after_calls": {"model_calls": 5, "eval_calls": 5, "grad_calls": 0}}
        >>> after_steps({"config": {"run_time": run}})  # eval mode, no grad: nothing to add
        []
    """
    run = (session.get("config") or {}).get("run_time") or {}
    calls = run.get("after_calls") or {}
    total, after = float(run.get("total_ms") or 0.0), float(run.get("after_ms") or 0.0)
    count = int(calls.get("model_calls") or 0)
    if not count or total <= 0 or after < MIN_SHARE * total:
        return []
    with_grad = int(calls.get("grad_calls") or 0)
    training = count - int(calls.get("eval_calls") or 0)
    if not with_grad and not training:
        return []
    how = [text for text, n in (("with autograd on", with_grad), ("in training mode", training))
           if n]  # fmt: skip
    share = after / total
    evidence = [
        f"the run's time after its last step: {fmt_ms(after)} of {fmt_ms(total)} "
        f"({100 * share:.0f}%), with {fmt_count(count)} outermost model calls in it",
    ]
    if with_grad:
        evidence.append(f"{fmt_count(with_grad)} of them ran with autograd on: each built a "
                        "graph for a backward that never came")  # fmt: skip
    if training:
        evidence.append(f"{fmt_count(training)} of them ran with the model in training mode "
                        "(dropout active, batch norm updating its statistics)")  # fmt: skip
    return [Advice(
        rule="after-steps",
        title=f"After the last step, {fmt_count(count)} model calls {' and '.join(how)} took "
        f"{fmt_ms(after)} ({100 * share:.0f}% of the run)",
        confidence="medium",
        evidence=evidence,
        fix=_FIX,
        references=["torch.no_grad", "torch.inference_mode", "nn.Module.eval"],
        code="model.eval()\nwith torch.no_grad():\n    out = model.generate(context, "
        "max_new_tokens=500)",
        heat=min(1.0, share),
        cause="inference-mode",
    )]
