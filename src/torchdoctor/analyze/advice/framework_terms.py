"""Advice in the terms of the framework that drives the loop: the Hugging Face Trainer builds
its model wrapper and DataLoaders from ``TrainingArguments``, so a script it trains has no
``model = torch.compile(model)`` line to add where the loop runs; the knob is
``TrainingArguments(torch_compile=True)``. (Its DataLoader settings are turned in
``data_phase._trainer_form``; its optimizer's in ``optimizer_step.fused_fix``.)

Example:
    >>> from torchdoctor.analyze.advice.base import Advice
    >>> item = Advice(rule="dominant-module", title="t", fix="Compile it.", cause="torch.compile",
    ...               code="model = torch.compile(model)")
    >>> session = {"environment": {"optimizers": [{"driver": "transformers"}]}}
    >>> [a.code for a in in_framework_terms(session, [item])]
    ['TrainingArguments(..., torch_compile=True)']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice

_TRAINER_COMPILE = (
    " With the Hugging Face Trainer, TrainingArguments(torch_compile=True) compiles the model "
    "it trains (torch_compile_mode=... picks the mode)."
)


def driver(session: Mapping[str, Any]) -> str | None:
    """The framework whose loop steps every optimizer of the run (``environment.optimizers[i]
    .driver``), None when the script's own loop does or there is none.

    Example:
        >>> driver({"environment": {"optimizers": [{"driver": "lightning"}]}}), driver({})
        ('lightning', None)
    """
    drivers = {o.get("driver") for o in (session.get("environment") or {}).get("optimizers") or ()}
    return next(iter(drivers)) if len(drivers) == 1 else None


def in_framework_terms(session: Mapping[str, Any], found: list[Advice]) -> list[Advice]:
    """``found`` with torch.compile's code and fix in the Trainer's terms when it drives.

    Example:
        >>> in_framework_terms({}, [])
        []
    """
    if driver(session) != "transformers":
        return found
    for item in found:
        if item.code and "torch.compile(model)" in item.code:
            item.code = "TrainingArguments(..., torch_compile=True)"
            item.fix = (item.fix or "").rstrip() + _TRAINER_COMPILE
    return found


def group_by_length_switch(session: Mapping[str, Any]) -> str:
    """The ``TrainingArguments`` switch that batches similar lengths together, in the
    installed transformers' terms (``environment.frameworks``): 5.x replaced
    ``group_by_length=True`` with ``train_sampling_strategy="group_by_length"``.

    Example:
        >>> group_by_length_switch({"environment": {"frameworks": {"transformers": "5.2.0"}}})
        'train_sampling_strategy="group_by_length"'
        >>> group_by_length_switch({})
        'group_by_length=True'
    """
    version = ((session.get("environment") or {}).get("frameworks") or {}).get("transformers")
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        major = 0
    return 'train_sampling_strategy="group_by_length"' if major >= 5 else "group_by_length=True"
