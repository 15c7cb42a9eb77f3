"""Advice: small pure rules over a Session, ranked by estimated payoff.

Each rule (one per module here) takes a Session (a mapping in the shape of
docs/session-schema.md) and returns zero or more :class:`Advice`. :func:`advise` runs them all
and ranks the result in tiers: advice with a measured saving first (by saving weighted by
confidence; a bound real runs of its remedy measured a known share of, by that share); then
advice backed by measured evidence whose saving cannot be estimated from this run (by
``heat``, the measured share of the step where its evidence lives); then generic engine knobs
(torch.compile, channels_last, ...) whose gain is a stated range, not a measurement; then
the rest (lint findings on cold code). Entries about the same source line or remedy are merged
into one (:func:`~torchdoctor.analyze.advice.merge.one_per_cause`). Rules are documented in
docs/advice-rules.md.

Example:
    >>> from torchdoctor.analyze.advice import advise
    >>> advise({"schema_version": 1, "tree": None, "syncs": []})
    []
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torchdoctor.analyze.advice.after_steps import after_steps
from torchdoctor.analyze.advice.attention_switches import with_attention_switches
from torchdoctor.analyze.advice.backward import backward_heavy
from torchdoctor.analyze.advice.base import (
    SPEEDUPS,
    Advice,
    Speedup,
    advice_step_ms,
    amdahl_saving,
    with_compile_caveat,
)
from torchdoctor.analyze.advice.checkpointing import activation_checkpointing
from torchdoctor.analyze.advice.communication import communication
from torchdoctor.analyze.advice.compile_time import recompiles
from torchdoctor.analyze.advice.cpu_contention import cpu_contention
from torchdoctor.analyze.advice.cpu_threads import cpu_oversubscription
from torchdoctor.analyze.advice.cpu_work import cpu_work
from torchdoctor.analyze.advice.data_phase import data_loading
from torchdoctor.analyze.advice.debug_modes import anomaly_detection
from torchdoctor.analyze.advice.decode_cache import decode_without_cache
from torchdoctor.analyze.advice.dominant import dominant_module
from torchdoctor.analyze.advice.double_backward import without_compile
from torchdoctor.analyze.advice.dropout_share import dropout_share
from torchdoctor.analyze.advice.embedding_gradient import embedding_gradient
from torchdoctor.analyze.advice.emulated_bf16 import emulated_bf16
from torchdoctor.analyze.advice.float64 import float64_training
from torchdoctor.analyze.advice.framework_terms import in_framework_terms
from torchdoctor.analyze.advice.grad_passes import grad_passes
from torchdoctor.analyze.advice.host_batch import host_batch
from torchdoctor.analyze.advice.hot_lines import hot_line_advice
from torchdoctor.analyze.advice.knobs import engine_knobs
from torchdoctor.analyze.advice.knobs_measured import with_tune
from torchdoctor.analyze.advice.lbfgs import lbfgs_bookkeeping
from torchdoctor.analyze.advice.library_loop import library_loop
from torchdoctor.analyze.advice.library_syncs import library_syncs
from torchdoctor.analyze.advice.lint_hot import lint_findings
from torchdoctor.analyze.advice.merge import one_per_cause
from torchdoctor.analyze.advice.one_sample import one_sample_per_call
from torchdoctor.analyze.advice.optimizer_step import optimizer_step
from torchdoctor.analyze.advice.other_phase import between_steps, python_outside_torch
from torchdoctor.analyze.advice.padding_waste import padding_waste
from torchdoctor.analyze.advice.page_faults import kernel_page_faults
from torchdoctor.analyze.advice.periodic_steps import periodic_steps
from torchdoctor.analyze.advice.recompute import loop_invariant
from torchdoctor.analyze.advice.rnn_per_step import rnn_per_step
from torchdoctor.analyze.advice.script_terms import in_script_terms
from torchdoctor.analyze.advice.single_long_step import single_long_step
from torchdoctor.analyze.advice.syncs import host_syncs
from torchdoctor.analyze.advice.torch_syncs import torch_syncs
from torchdoctor.analyze.advice.train_inference import train_inference_ratio
from torchdoctor.analyze.advice.tune_command import with_tune_command
from torchdoctor.analyze.advice.unattributed import unattributed
from torchdoctor.analyze.advice.unused_outputs import unused_outputs
from torchdoctor.analyze.advice.worker_respawn import worker_respawn

__all__ = [
    "RULES",
    "SPEEDUPS",
    "Advice",
    "Speedup",
    "advise",
    "advice_dicts",
    "amdahl_saving",
]

#: every rule, in the order they are run (ranking does not depend on it except for ties);
#: each takes a Session mapping (the lint rule reads ``session["lint"]``)
RULES: tuple[Callable[[Mapping[str, Any]], list[Advice]], ...] = (
    loop_invariant,
    decode_without_cache,
    one_sample_per_call,
    dominant_module,
    host_syncs,
    torch_syncs,
    library_syncs,
    backward_heavy,
    activation_checkpointing,
    train_inference_ratio,
    data_loading,
    worker_respawn,
    between_steps,
    periodic_steps,
    single_long_step,
    rnn_per_step,
    embedding_gradient,
    after_steps,
    library_loop,
    python_outside_torch,
    host_batch,
    optimizer_step,
    lbfgs_bookkeeping,
    dropout_share,
    padding_waste,
    unused_outputs,
    float64_training,
    recompiles,
    anomaly_detection,
    communication,
    cpu_work,
    cpu_oversubscription,
    cpu_contention,
    kernel_page_faults,
    hot_line_advice,
    grad_passes,
    unattributed,
    engine_knobs,
    emulated_bf16,
    lint_findings,
)

_CONFIDENCE_WEIGHT = {"high": 1.0, "medium": 0.7, "low": 0.4}


#: a specific saving under this share of the step ranks with the generic knobs, by payoff (a
#: per-parameter loop's 0.035 ms ranked first, above torch.compile at 8% of the step)
NEGLIGIBLE_SAVING = 0.005

#: among the generic knobs, one that states no saving, only a bound ("up to"), ranks by this
#: share of its bound: facebookresearch/dino's CPU bf16 autocast, up to 1,171 ms (it measured
#: 1,148), ranked below an EMA loop's stated 1.75 ms, both in that tier
BOUND_SHARE = 0.1

#: a specific saving under this share of the step (and above :data:`NEGLIGIBLE_SAVING`) ranks
#: with the measured evidence, by its share of the step: a two-phase pipeline's periodic-steps
#: item, 0.2 ms stated (1% of the step), ranked first above one-sample-per-call (the calls
#: are the whole step, no saving stated), which measured 3-24% with sorted batches
SMALL_SAVING = 0.02


def _rank_key(advice: Advice, step: float = 0.0) -> tuple[int, float]:
    """Tiers, then payoff within a tier: (3) a measured saving, or a bound whose remedy's real
    runs measured a known share of it (:attr:`Advice.bound_realized`: that expected saving),
    (2) measured evidence without a saving (sync lines, lint findings on hot lines), (1)
    generic knobs and savings under :data:`NEGLIGIBLE_SAVING` of the ``step`` (a knob stating
    only a bound: by :data:`BOUND_SHARE` of it), (0) the rest. A saving under
    :data:`SMALL_SAVING` of the step ranks in tier 2 by its share of the step, as the evidence
    there ranks by the share of the step it covers (``heat``)."""
    weight = _CONFIDENCE_WEIGHT.get(advice.confidence, 0.4)
    saving = advice.estimated_saving_ms or 0.0
    if advice.saving_range_ms:  # an upper bound (range from 0) ranks by its low end
        saving = min(saving, advice.saving_range_ms[0])
    if not saving and advice.saving_range_ms and advice.bound_realized:
        expected = advice.bound_realized * advice.saving_range_ms[-1]
        if expected >= NEGLIGIBLE_SAVING * step:  # (minGPT's CPU bf16 autocast: up to 387
            return (3, expected * weight)  # ms, measured 272, ranked 7th by a tenth of it)
    if advice.generic or 0 < saving < NEGLIGIBLE_SAVING * step:
        if not saving and advice.saving_range_ms:  # (a bound alone: a share of it)
            return (1, BOUND_SHARE * advice.saving_range_ms[-1] * weight)
        return (1, saving * weight)
    if saving > 0 and step > 0 and saving < SMALL_SAVING * step:
        return (2, saving / step * weight)
    if saving > 0:
        return (3, saving * weight)
    if advice.heat > 0:
        return (2, advice.heat * weight)
    return (0, 0.0)


def advise(session: Mapping[str, Any], lint: Sequence[Any] | None = None) -> list[Advice]:
    """Run every rule on a session and return its advice ranked, priorities 1..n.

    ``lint`` overrides ``session["lint"]`` (``torchdoctor.lint`` Findings or their dicts).
    ``estimated_saving_pct`` is of the step without the profiler (``saving_step_ms``), or of the
    run's mean step when that is longer.

    Example:
        >>> rec = {"path": "encoder", "calls_per_step": 10, "identical_input_calls": 9,
        ...        "time_per_call_ms": 2.0}
        >>> [a.rule for a in advise({"step_ms": {"median": 40.0}, "recomputation": [rec]})]
        ['loop-invariant']
    """
    if not isinstance(session, Mapping):
        raise TypeError(
            f"advise expects a Session or its dict, got {type(session).__name__}; "
            "load one with torchdoctor.Session.load(path)"
        )
    if lint is not None:
        session = {**session, "lint": list(lint)}
    found: list[Advice] = []
    for rule in RULES:
        found.extend(rule(session))
    found = with_tune(session, found)  # a measured remedy replaces a stated saving
    found = with_attention_switches(session, found)  # (a library's own switch, not a rewrite)
    found = in_framework_terms(session, found)  # (the Trainer's knobs, not a line to add)
    found = in_script_terms(session, found)  # (the script's own option for the remedy first)
    found = with_tune_command(session, found)  # (`torchdoctor tune` with the run's arguments)
    found = without_compile(session, found)  # (a step differentiating a gradient: refused)
    found = with_compile_caveat(found)  # (what a compile's stated speedup leaves out)
    step = advice_step_ms(session)  # (of the step without the profiler, or the mean step)
    found.sort(key=_rank_key, reverse=True)
    found = one_per_cause(found)  # the strongest entry of each cause keeps its place
    # (merged as ranked by kind, so a specific cure keeps the lines a bundle shares with it;
    # then ranked by payoff, a negligible saving below a material generic one)
    found.sort(key=lambda item: _rank_key(item, step), reverse=True)
    for priority, item in enumerate(found, start=1):
        item.priority = priority
        if item.estimated_saving_ms is not None and step > 0:
            item.estimated_saving_pct = 100.0 * item.estimated_saving_ms / step
    return found


def advice_dicts(
    session: Mapping[str, Any], lint: Sequence[Any] | None = None
) -> list[dict[str, Any]]:
    """:func:`advise` as plain dicts, ready for ``session["advice"]``.

    Example:
        >>> advice_dicts({"tree": None})
        []
    """
    return [item.to_dict() for item in advise(session, lint)]
