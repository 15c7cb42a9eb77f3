"""A cure of a hot line: the remedy, its fix, a snippet and the speedup it measured."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torchdoctor.analyze.advice.base import (
    Advice,
    Speedup,
    amdahl_saving,
    compile_on_cpu,
    is_cuda,
    with_saving,
)
from torchdoctor.analyze.advice.dominant_kinds import CPU_DROPOUT_NOTE, dropout_ran_under


@dataclass(frozen=True)
class Cure:
    """A remedy for a hot line: what it is, the fix, a before/after snippet, its speedup.

    Example:
        >>> Cure("batch it", "one call", "Batch the loop.", Speedup(3.0, 40.0, "a table")).speedup.low
        3.0
    """

    name: str
    summary: str
    fix: str
    speedup: Speedup
    references: tuple[str, ...] = ()
    code: str | None = None
    #: the cause another rule's advice with the same remedy shares (merged into one advice)
    cause: str | None = None
    #: where its speedup comes from, as the saving note says it
    basis: str = "benchmarked"


def removing_share(cure: Cure, share: float, source: str) -> Cure:
    """``cure`` with the speedup of removing ``share`` of a line's measured time (at most 95%):
    the cures whose saving is a measured part of the line (initialisers, slices' backward).

    Example:
        >>> cure = Cure("x", "y", "z", Speedup(1.0, 1.0, "set per line"))
        >>> removing_share(cure, 0.75, "measured").speedup.low
        4.0
    """
    speedup = 1.0 / (1.0 - min(0.95, share))
    return dataclasses.replace(cure, speedup=Speedup(speedup, speedup, source))


def cure_saving(advice: Advice, step_time_ms: float, fraction: float, cure: Cure,
                session: Mapping[str, Any], owners: Any = ()) -> Advice:
    """A cure's saving on a measured share: :func:`with_saving`, except a torch.compile cure
    on a CPU run, whose gain ranges from a loss to a gain there (:func:`compile_on_cpu`, low
    confidence): mamba.py's selective scan compiled as a fused chain's cure advised went 802 ->
    973 ms a step, where 7.3 ms was stated saved with high confidence.

    Example:
        >>> from torchdoctor.analyze.advice.chain_cure import FUSE_CHAIN
        >>> a = cure_saving(Advice("r", "t"), 100.0, 0.5, FUSE_CHAIN, {"environment": {"device": "cpu"}})
        >>> a.estimated_saving_ms, a.confidence
        (None, 'low')
    """
    if cure.cause == "torch.compile" and not is_cuda(session):
        advice.confidence = "low"
        return compile_on_cpu(advice, step_time_ms, fraction)
    # (SDPA with dropout_p > 0 takes its unfused math path on a CPU: minGPT's chargpt,
    # attention dropout 0.1, told 187 ms, measured 15 ms): a bound, as the module rule's;
    # so is a cure measured slower in some of its cases
    dropout = cure.cause == "sdpa" and not is_cuda(session) and dropout_ran_under(
        session.get("tree"), owners)  # fmt: skip
    if dropout or cure.speedup.low < 1.0:
        advice.estimated_saving_ms, advice.confidence = None, "low"
        advice.saving_range_ms = [0.0, amdahl_saving(step_time_ms, fraction, cure.speedup.high)]
        advice.heat = max(advice.heat, min(max(fraction, 0.0), 1.0))
        advice.bound_realized = None if dropout else cure.speedup.realized
        advice.evidence.append(CPU_DROPOUT_NOTE if dropout else (
            f"no saving stated: measured {cure.speedup.low:g}x-{cure.speedup.high:g}x "
            f"({cure.speedup.source}); measure it on your step"))  # fmt: skip
        return advice
    return with_saving(advice, step_time_ms, fraction, cure.speedup)
