"""Rule ``recompiles``: torch.compile keeps compiling inside the steps (shapes that change).

The profiler reads Dynamo's own compile timers at every step boundary (``session["compile"]``:
the compile time per step it happened in). The first compilation of a compiled function is its
price; compiling again in later steps means the guards failed, most often because an input
shape changed (a batch size, a sequence length), and each recompilation stalls its step for
as long as the first compilation did. The saving is the measured compile time of every step
after the first one that compiled: the time that ``dynamic=True``, marking the varying
dimension, or padding to a few fixed shapes removes.

Example:
    >>> compile_info = {"compile_ms": 3000.0, "steps_with_compile": 3,
    ...                 "steps": [{"index": 0, "compile_ms": 1000.0},
    ...                           {"index": 4, "compile_ms": 1000.0},
    ...                           {"index": 9, "compile_ms": 1000.0}]}
    >>> session = {"compile": compile_info, "step_ms": {"mean": 100.0}, "config": {"steps": 40}}
    >>> [round(a.estimated_saving_ms, 1) for a in recompiles(session)]  # 2000 ms over 40 steps
    [50.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms, pct
from torchdoctor.session_read import step_ms

#: recompilation worth advising: at least this share of the run's step time
MIN_SHARE = 0.02


def recompiles(session: Mapping[str, Any]) -> list[Advice]:
    """Advice when torch.compile compiled again after the first step it compiled in.

    Example:
        >>> recompiles({})  # (a session without the evidence this rule reads)
        []
    """
    info = session.get("compile") or {}
    steps_listed = [s for s in info.get("steps") or () if isinstance(s, Mapping)]
    count = int(info.get("steps_with_compile") or len(steps_listed))
    total = float(info.get("compile_ms") or 0.0)
    if count < 2 or total <= 0 or not steps_listed:
        return []
    first = float(steps_listed[0].get("compile_ms") or 0.0)
    again = max(0.0, total - first)  # every compilation after the first step's
    steps = int((session.get("config") or {}).get("steps") or len(session.get("steps") or ()))
    mean_step = step_ms(session)
    run = mean_step * steps
    if steps <= 0 or run <= 0 or again < MIN_SHARE * run:
        return []
    per_step = again / steps
    where = ", ".join(str(s.get("index")) for s in steps_listed[1:8])
    more = "" if count <= 8 else f" and {count - 8} more"
    return [
        Advice(
            rule="recompiles",
            title=f"torch.compile recompiles in {count - 1} later step(s): "
            f"{fmt_ms(again)} of compiling ({pct(again, run):.0f}% of the run's step time)",
            estimated_saving_ms=per_step,
            saving_range_ms=[per_step, per_step],
            confidence="high",
            evidence=[
                f"compiling inside the steps: {fmt_ms(total)} in {count} step(s); the first "
                f"({fmt_ms(first)}, step {steps_listed[0].get('index')}) is the compile "
                "itself",
                f"compiled again in steps {where}{more}: each recompilation stalls its step "
                "(Dynamo's guards failed: most often an input shape changed)",
                f"{fmt_ms(per_step)} per step averaged over the {steps} profiled steps",
            ],
            fix="Find what changes with TORCH_LOGS=recompiles (it prints each failed guard); "
            "for a varying batch size or sequence length compile with dynamic=True or mark the "
            "dimension (torch._dynamo.mark_dynamic(x, 0)), or pad inputs to a few fixed sizes "
            "(drop_last=True for a last short batch); keep Python scalars that change per step "
            "out of the compiled function's arguments.",
            references=[
                "torch.compile(dynamic=True)",
                "torch._dynamo.mark_dynamic",
                "TORCH_LOGS=recompiles",
            ],  # fmt: skip
            code="model = torch.compile(model)                 # before: a graph per shape\n"
            "model = torch.compile(model, dynamic=True)   # after: one graph, shapes symbolic",
            heat=min(1.0, again / run),
            cause="recompiles",
        )
    ]
