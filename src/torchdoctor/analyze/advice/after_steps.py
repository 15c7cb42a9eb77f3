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

import re
import statistics
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, center, fmt_count, fmt_ms, walk

#: the share of the run after the steps worth a word
MIN_SHARE = 0.05

_FIX = (
    "Run the work after the loop (a final generation, an evaluation) with the model in eval "
    "mode and autograd off: model.eval() and `with torch.no_grad():` (or "
    "torch.inference_mode()) around it. No graph is built for calls nobody differentiates, "
    "and dropout is off, as sampling and evaluating want it (ng-video-lecture's final "
    "generate(): 5.47 s as written, 3.32 s so). Call model.train() again if training goes on."
)


#: module types that behave differently in training mode (a model without any: mode is moot)
_MODE_SENSITIVE = re.compile(r"Dropout|DropPath|StochasticDepth|BatchNorm|InstanceNorm")


def _calls_ms(session: Mapping[str, Any], count: int) -> float | None:
    """``count`` outermost model calls at the detailed steps' forward per outermost call (the
    tree's forward over the steps' ``model_calls``); None when the session has neither.

    Example:
        >>> steps = [{"detailed": True, "model_calls": 2}] * 3
        >>> _calls_ms({"tree": {"forward_ms": {"mean": 8.0}}, "steps": steps}, 10)
        40.0
    """
    calls = [int(s.get("model_calls") or 0) for s in session.get("steps") or ()
             if s.get("detailed") and s.get("model_calls")]  # fmt: skip
    forward = center((session.get("tree") or {}).get("forward_ms"))
    if not calls or forward <= 0:
        return None
    return forward / statistics.median(calls) * count


def _moot_share(tree: Mapping[str, Any]) -> float:
    """The share of the outermost module calls per step whose mode is moot: modules with no
    dropout or batch norm inside (a loss module called apart from the model, never put in eval
    mode: torchvision's classification reference evaluates ``criterion(output, target)`` after
    ``model.eval()``, and its 10 CrossEntropyLoss calls were told as the model in training mode).

    Example:
        >>> model = {"type": "Net", "calls_per_step": 1.0, "children": [{"type": "Dropout"}]}
        >>> loss = {"type": "CrossEntropyLoss", "calls_per_step": 1.0}
        >>> _moot_share({"children": [model, loss, {"name": "(self)"}]})
        0.5
    """
    tops = [n for n in tree.get("children") or () if n.get("type")]
    if any(n.get("calls_per_step") is None for n in tops):  # (calls unknown: none is moot)
        return 0.0
    calls = [float(n["calls_per_step"]) for n in tops]
    moot = sum(c for n, c in zip(tops, calls) if not any(
        _MODE_SENSITIVE.search(str(m.get("type") or "")) for m, _ in walk(n)))  # fmt: skip
    return moot / sum(calls) if sum(calls) > 0 else 0.0


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
    tree = session.get("tree")
    if tree and not any(_MODE_SENSITIVE.search(str(n.get("type") or "")) for n, _ in walk(tree)):
        training = 0  # (no dropout, no batch norm: training mode changes nothing; dlrm's MLPs)
    elif tree:
        training = max(0, training - round(count * _moot_share(tree)))
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
    calls_ms = _calls_ms(session, count)
    heat = share
    title = (f"After the last step, {fmt_count(count)} model calls {' and '.join(how)} took "
             f"{fmt_ms(after)} ({100 * share:.0f}% of the run)")  # fmt: skip
    if calls_ms is not None and calls_ms < 0.5 * after:  # (dlrm: its test loader's batches)
        heat = calls_ms / total
        title = (f"After the last step, {fmt_ms(after)} ({100 * share:.0f}% of the run) with "
                 f"{fmt_count(count)} model calls {' and '.join(how)}, about {fmt_ms(calls_ms)} "
                 "of it")  # fmt: skip
        evidence.append(
            f"the model calls themselves take about {fmt_ms(calls_ms)} of it (the steps' "
            "forward per outermost call): the rest is other work between them (making the "
            "batches, metrics, saving), which eval mode and no_grad do not change")
    return [Advice(
        rule="after-steps",
        title=title,
        confidence="medium",
        evidence=evidence,
        fix=_FIX,
        references=["torch.no_grad", "torch.inference_mode", "nn.Module.eval"],
        # (what is missing only: NCF's evaluation ran in eval mode already, and generates nothing)
        code=("model.eval()\n" if training else "") + "with torch.no_grad():  # around the "
        "work after the loop\n    out = model(batch)  # an evaluation, or model.generate(...)",
        heat=min(1.0, heat),
        cause="inference-mode",
    )]
