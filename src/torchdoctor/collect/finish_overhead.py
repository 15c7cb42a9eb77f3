"""The profiler's estimate of its own cost, into a stopped profiler's Session.

:func:`note_profiler_overhead` gathers what the run measured (module hooks, sync audits, the
hot-lines collector, step bookkeeping, detailed against light steps) for
``collect/profiler_overhead.py``'s estimate, stores it in ``config.profiler_overhead`` and,
when it is a sizable share of a detailed step, says so in the notes.

Example:
    >>> OVERHEAD_NOTE_PCT
    5.0
"""

from __future__ import annotations

from typing import Any

from torchdoctor.collect.assemble import own_ms, typical_steps
from torchdoctor.collect.lines_overhead import in_clock_cost_us, line_call_cost_us
from torchdoctor.collect.profiler_overhead import estimate_profiler_overhead, measured_detail_ms
from torchdoctor.collect.profiler_state import ProfilerState, StepBoundary
from torchdoctor.collect.syncs_overhead import per_call_cost_us
from torchdoctor.session import Session
from torchdoctor.session_read import fmt_ms, walk


def _hook_ms_per_step(state: ProfilerState, calls_per_step: float, detailed: int) -> float:
    """The module hooks' measured host time in a typical detailed step: their time per call
    times the tree's calls per step. (Their mean per step would let one outlier step decide:
    minGPT's adder evaluates 10,000 samples with generate() in its first step, thousands of
    module calls in a step of 42, and the hooks read 299 us per call instead of ~16.)

    Example:
        >>> state = ProfilerState(hook_ns=4_000_000 + 84_000_000, hook_calls=42 + 2_000)
        >>> round(_hook_ms_per_step(state, calls_per_step=42, detailed=2), 2)
        1.81
    """
    if state.hook_calls:
        return state.hook_ns / 1e6 / state.hook_calls * calls_per_step
    return state.hook_ns / 1e6 / max(1, detailed)


def _light_calls(session: Session, state: ProfilerState, calls_per_step: float) -> float:
    """The module calls a light step hooks: none, unless steps are cut at module calls; then
    the outermost ones (the tree root's modules) or, hooked everywhere, all of them.

    Example:
        >>> session = {"tree": {"children": [{"kind": "module", "calls_per_step": 2.0}]}}
        >>> state = ProfilerState(boundary=StepBoundary.MODULE, light_hooks_outermost=True)
        >>> _light_calls(session, state, calls_per_step=70.0)
        2.0
    """
    if state.boundary is not StepBoundary.MODULE:
        return 0.0
    if not state.light_hooks_outermost:
        return calls_per_step
    return sum(
        float(child.get("calls_per_step") or 0)
        for child in session["tree"].get("children") or ()
        if child.get("kind") == "module"
    )


#: model calls per step that vary this much (q3 / q1, or detailed against light medians) make
#: wall times comparable only per call
CALLS_SPREAD = 1.25


def per_model_call(summaries: Any) -> list[tuple[bool, float]]:
    """``(detailed, wall ms)`` per step; when the steps' outermost model calls vary (an RL
    loop's episodes: actor_critic's detailed steps ran 128 actions, its light ones ~25), each
    wall is scaled to the detailed steps' median calls (its ms per call x those calls), so a
    detailed step is compared with light steps of the same work.

    Example:
        >>> steps = [{"detailed": False, "wall_ms": 2.0 * n, "model_calls": n} for n in (10, 20, 40)]
        >>> steps += [{"detailed": True, "wall_ms": 300.0, "model_calls": 100}]
        >>> per_model_call(steps)
        [(False, 200.0), (False, 200.0), (False, 200.0), (True, 300.0)]
    """
    walls = [(bool(s.get("detailed", True)), float(s.get("wall_ms") or 0.0)) for s in summaries]
    calls = [int(s.get("model_calls") or 0) for s in summaries]
    if not calls or min(calls) <= 0:
        return walls
    light = sorted(c for c, (detailed, _) in zip(calls, walls) if not detailed)
    detailed = sorted(c for c, (is_detailed, _) in zip(calls, walls) if is_detailed)
    if not light or not detailed:
        return walls
    typical = detailed[len(detailed) // 2]
    spread = light[3 * len(light) // 4] / light[len(light) // 4]
    apart = max(typical, light[len(light) // 2]) / min(typical, light[len(light) // 2])
    if spread < CALLS_SPREAD and apart < CALLS_SPREAD:
        return walls
    return [(is_detailed, ms / n * typical) for (is_detailed, ms), n in zip(walls, calls)]


def _left_out(state: ProfilerState) -> tuple[list[dict[str, int]] | None, set[int]]:
    """``(counts, left out)``: the per-step collection counts of the detailed steps the tree
    keeps (None when some lack them) and the ids of the summaries it left out (an evaluation,
    a stall). The counts are the kept steps' own: the run's totals also hold the warm-up's
    calls (a script that raised in its first step showed ~505% of its partial step)."""
    every = [own_ms(s) for s in state.summaries.kept()]
    kept, out = typical_steps(state.detailed_summaries(), every)
    counts = [s.get("collect_counts") for s in kept]
    return (counts if kept and None not in counts else None), {id(s) for s in out}


#: the profiler's estimated share of the step above which the report says so
OVERHEAD_NOTE_PCT = 5.0


def note_profiler_overhead(
    session: Session, state: ProfilerState, audits: list[Any], registration_ns: int = 0
) -> None:
    """Estimate the profiler's cost (``collect/profiler_overhead.py``) into the config and,
    when it is a sizable share of a detailed step, say so in the notes.

    Example:
        >>> import torch, torchdoctor
        >>> net = torch.nn.Linear(2, 2)
        >>> with torchdoctor.Profiler(net, syncs=False) as prof:
        ...     for _ in range(3):
        ...         net(torch.ones(1, 2)).sum().backward()
        ...         prof.step()
        >>> session = prof.session  # (the profiler called it when it stopped)
        >>> note_profiler_overhead(session, prof.state, audits=[])
        >>> session["config"]["profiler_overhead"]["source"] in ("measured", "calibrated")
        True
    """

    calls = sum(
        float(node.get("calls_per_step") or 0)
        for node, _ in walk(session["tree"])
        if node.get("kind") == "module" and node.get("path")
    )
    backward = state.backward and (session["phases"].get("backward") or {}).get("median", 0) > 0
    step = (session.get("step_ms") or {}).get("median") or 0.0
    detail = session["config"]["detail"]
    steps = max(1, state.summaries.count)
    audit_calls = audit_cost = 0.0
    for one in audits:  # the audits active while profiling (run's own included)
        calls_per_step = one.function_calls / max(1, detail["audited_count"])
        if calls_per_step:
            audit_calls += calls_per_step
            audit_cost = per_call_cost_us("function", type(one))
    typical, out = _left_out(state)  # (the calls of a step left out are no typical step's)
    summaries = [s for s in state.summaries if id(s) not in out]
    # per detailed step (lines are timed in some of them: schedule.LINES_EVERY)
    per_lines = max(state.line_steps, sum(1 for s in summaries if s.get("detailed", True)), 1)
    seen, timed = state.line_calls_seen, state.line_calls_timed
    python, own_ns = state.line_calls_python, state.line_own_ns
    if typical is not None:
        per_lines = len(typical)
        seen, timed, python, own_ns = (sum(c.get(key, 0) for c in typical) for key in
                                       ("line_seen", "line_timed", "line_python", "line_own_ns"))  # fmt: skip
        if audit_calls:
            audit_calls = sum(c["audit_calls"] for c in typical) / len(typical)
    line_calls = timed / per_lines
    line_seen = max(0.0, seen / per_lines - line_calls)  # seen, not timed
    line_own_ms = own_ns / 1e6 / per_lines  # measured inside the collector
    line_cost = line_call_cost_us("outside" if line_own_ms else "timed") if line_calls else 0.0
    seen_cost = line_call_cost_us("seen") if line_seen else 0.0
    if line_seen:  # the Python-level share of all calls seen pays torch's Python dispatch too
        python_share = python / max(1, seen)
        seen_cost += python_share * line_call_cost_us("seen_python")
    walls = per_model_call(summaries)  # (RL episodes of any length: work per step varies)
    # every detailed step counts: the first window's pay the first calls' costs (registering
    # modules, cold hooks) and sample what the later ones do; without a warm-up step the
    # first detailed step is the script's first step (lazy initialization) and is left out
    measured = measured_detail_ms(walls, first_window=0 if state.warmup else 1)
    if detail.get("mode") == "windows" and len(detail.get("detailed_steps") or ()) < 2:
        # one window only (a run under ~100 steps): its steps sit in the script's own warm-up,
        # which no later window balances (pytorch/examples' GCN, 59 steps: 4.2 ms measured
        # against 1.3 ms calibrated, while detail="always"'s interleaved control steps agreed
        # with the calibrated sum); the calibrated sum stands, unless it is larger: that
        # window's steps can only be slowed by the warm-up (an upper bound)
        window_bound, measured = measured, None
    else:
        window_bound = None
    first_extra_ms = 0.0  # ... its first calls' profiler work is not: measured, added back
    detailed_count = detail["detailed_count"]
    if not state.warmup and state.first_detail_ns is not None and detailed_count > 1:
        rest = (state.hook_ns + state.line_own_ns - state.first_detail_ns) / (detailed_count - 1)
        first_extra_ms = max(0.0, state.first_detail_ns - rest) / 1e6
    detailed_walls = sorted(ms for is_detailed, ms in walls if is_detailed)
    light_walls = sorted(ms for is_detailed, ms in walls if not is_detailed)
    spread = (
        light_walls[3 * len(light_walls) // 4] - light_walls[len(light_walls) // 4]
        if light_walls else None
    )
    estimate = estimate_profiler_overhead(
        calls, step, backward=bool(backward), steps=steps, detailed_steps=detail["detailed_count"],
        audit_calls_per_step=audit_calls, audit_cost_us=audit_cost,
        line_calls_per_step=line_calls, line_cost_us=line_cost, line_ms_per_step=line_own_ms,
        line_seen_per_step=line_seen, line_seen_cost_us=seen_cost,
        measured_detail_ms=measured, audit_in_light=detail.get("mode") == "always",
        detailed_step_ms=detailed_walls[len(detailed_walls) // 2] if detailed_walls else None,
        bookkeeping_ms_per_step=state.bookkeeping_ns / 1e6 / steps,
        hook_ms_per_step=_hook_ms_per_step(state, calls, detail["detailed_count"]),
        light_calls_per_step=_light_calls(session, state, calls),
        registration_ms=registration_ns / 1e6, event_ms=state.event_ns / 1e6,
        first_step_ms=first_extra_ms, light_spread_ms=spread,
        mean_step_ms=(session.get("step_ms") or {}).get("mean"), window_bound_ms=window_bound,
        graph_hooks_per_call=state.graph_hooks / state.hook_calls if state.hook_calls else None,
    )  # fmt: skip
    if line_calls:  # the per-call costs a hot line's timed calls pay (analyze/.../hot_lines_data)
        # what falls in the gap its clock counts before each later call of a line's execution:
        # the collector's dispatch, with autograd running the hooks of the calls that made
        # nodes. An attribute read between two calls (`p.data`) ends the gap its clock counts,
        # so the calls seen untimed are in no line's time; the sync audit's calls, measured in
        # situ, were not either (a line of 30 `y * 1.0001 + 0.1`, 0.52 ms unprofiled: 0.70 ms
        # with the audit, 0.84 without, medians of 6 runs each; BENCHMARKS.md). It read ~3 us
        # a call in situ, and was charged 26-40 us with the session's reads and the audit's
        estimate["per_timed_call_us"] = line_cost
        estimate["no_grad_call_us"] = min(line_cost, line_call_cost_us("later"))
        # ... of which an execution's first call pays only what falls inside the line's clock
        # (its dispatch, the handler's bookkeeping and the audit's mode, above the lines', come
        # before and after it)
        estimate["first_call_us"] = min(estimate["no_grad_call_us"], in_clock_cost_us())
    session["config"]["profiler_overhead"] = estimate
    pct = estimate.get("overhead_pct")
    if isinstance(pct, float) and pct >= OVERHEAD_NOTE_PCT:
        parts = []
        if estimate["cost_us"] is not None:
            parts.append(f"{calls:g} module calls per step x {estimate['cost_us']:.1f} us of hooks")
        if audit_calls:
            parts.append(f"{audit_calls:.0f} sync-audit calls x {audit_cost:.2f} us")
        if line_calls and line_cost:
            parts.append(f"{line_calls:.0f} timed torch calls x {line_cost:.2f} us"
                         + (f" + {fmt_ms(line_own_ms)} measured (hot lines)" if line_own_ms
                            else " (hot lines)"))  # fmt: skip
        if line_seen and seen_cost:
            parts.append(f"{line_seen:.0f} other torch calls x {seen_cost:.2f} us (their dispatch)")
        how = "estimated: " + " + ".join(parts or ["hooks"])
        if "measured_discarded_ms" in estimate:
            how += (f"; detailed steps were {fmt_ms(estimate['measured_discarded_ms'])} slower than "
                    f"light ones, but the light steps themselves spread over "
                    f"{fmt_ms(estimate['light_spread_ms'])} (q1-q3): the run's noise, not used")  # fmt: skip
        if estimate.get("source") in ("measured", "window bound"):
            how = (f"measured: detailed steps are {fmt_ms(estimate['overhead_ms'])} slower than "
                   f"light ones (mean detailed, median light"
                   + ("; the one detail window, in the script's warm-up: at most this"
                      if estimate["source"] == "window bound" else "")
                   + f"); the calibrated parts sum to "
                   f"{fmt_ms(estimate['calibrated_overhead_ms'])}: " + " + ".join(parts or ["hooks"]))  # fmt: skip
        session["config"]["notes"].append(
            f"profiler overhead ~{pct:.0f}% (a detailed step takes that much longer than "
            f"without the profiler; {how}): small modules and their parents' (self) rows look slower than they are; "
            "not subtracted (the hooks run inside the modules' times); closing each step "
            f"({fmt_ms(estimate['bookkeeping_ms_per_step'])}) is outside the step times"
        )

