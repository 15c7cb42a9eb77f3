"""Rule ``data-loading``: the data phase takes >= 10% of the step (seed 004).

Loading runs on the training process between steps unless DataLoader workers overlap it with
compute. The saving assumes workers hide most of it (stated speedup of the data phase 2-10x).

Example:
    >>> data_loading({"phases": {}})
    []
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import SPEEDUPS, Advice, pct, with_saving
from torchdoctor.session_read import center, fmt_ms, tree_step_ms

THRESHOLD = 0.10


def data_loading(session: Mapping[str, Any]) -> list[Advice]:
    """Advice when the data phase is >= 10% of the step.

    Example:
        >>> s = {"phases": {"data": {"median": 3.0}}, "step_ms": {"median": 10.0}}
        >>> data_loading(s)[0].estimated_saving_ms
        1.5
    """
    step = tree_step_ms(session)
    data = center((session.get("phases") or {}).get("data"))
    if step <= 0 or data < THRESHOLD * step:
        return []
    advice = Advice(
        rule="data-loading",
        title="Data loading stalls the step: overlap it with DataLoader workers",
        confidence="medium",
        evidence=[f"data phase {fmt_ms(data)} per step ({pct(data, step):.0f}% of the step)"],
        fix="DataLoader(num_workers=2..8, pin_memory=True, persistent_workers=True, "
        "prefetch_factor=2); move augmentation to the GPU; non_blocking=True copies.",
        references=["torch.utils.data.DataLoader", "seed 004"],
        code="loader = DataLoader(ds, batch_size=64)                         # before\n"
        "loader = DataLoader(ds, batch_size=64, num_workers=4, pin_memory=True,\n"
        "                    persistent_workers=True, prefetch_factor=2)  # after",
        cause="dataloader-workers",
    )
    return [with_saving(advice, step, data / step, SPEEDUPS["dataloader_workers"])]
