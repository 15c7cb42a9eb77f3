"""Rule ``lint``: static findings, those on lines the profile shows hot ranked above cold ones.

A finding is hot when its line is a recorded sync line, a measured line (the ``hot_lines``
section: heat = the line's own share of the step), a line under which model calls ran (the
``call_lines`` section: a call into user code that runs a model, GCN's ``test(model, ...)``), the ``for`` of a loop whose body lines were
measured (TD304, TD305 are reported there: heat = the body's share), or lies inside the source span of a
measured module/region taking >= 5% of the step; its ``heat`` is that part's share of the step
(1.0 for a sync line). Findings on a line that has advice of its own (rule ``hot-line``) are
left to that advice, as its evidence. Hot findings get one Advice each; cold ones are grouped per code with
heat 0, so they rank last. A finding whose pattern spans lines (``pattern_lines``) is measured
over them and names them, so their own hot-line advice joins it. DataLoader findings that the
run's own loaders contradict are dropped, those about a rarely used loader are cold
(:mod:`torchdoctor.analyze.advice.lint_loaders`).

Example:
    >>> lint_findings({"lint": []})
    []
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.analyze.advice.base import (
    Advice,
    fmt_count,
    fmt_ms,
    location,
    median,
    negligible_syncs,
    node_ms,
    pct,
    same_file,
    sync_heat,
    tree_step_ms,
    unattributed_ms,
    walk,
)
from torchdoctor.analyze.advice.cure import cure_saving
from torchdoctor.analyze.advice.hot_lines_cures import (
    finding_cure,
    loop_cause,
    saving_note,
)
from torchdoctor.analyze.advice.hot_lines_data import (
    call_line_of,
    hot_lines,
    line_not_run,
    line_of,
    lines_between,
    loop_of,
    root_lines_ms,
)
from torchdoctor.analyze.advice.lint_groups import (
    NEGLIGIBLE_SHARE,
    cold_advice,
    summed_findings,
)
from torchdoctor.analyze.advice.lint_loaders import contradicted, rare_loader
from torchdoctor.analyze.advice.unbuilt_modules import module_never_called
from torchdoctor.lint.registry import RULES

HOT_FRACTION = 0.05
MAX_HOT = 10
#: ... or on a line of the user's module that made no torch call in the measured steps
NOT_RUN_NOTE = "the profile saw no torch call from this line: it did not run in the measured steps"
#: what _heat says of a recorded sync line whose syncs are too few for the step's length
NEGLIGIBLE_SYNCS = "negligible in this step"
#: lint codes whose remedy another rule also prescribes (they merge into one advice)
CAUSES = {"TD401": "dataloader-workers", "TD403": "dataloader-workers", "TD604": "kv-cache",
          "TD507": "sdpa"}  # fmt: skip


def _cause(finding: Mapping[str, Any]) -> str | None:
    """The cause a finding shares with a runtime rule (merged into one advice).

    Example:
        >>> _cause({"code": "TD702", "message": "anomaly detection is switched on ..."})
        'anomaly-detection'
        >>> _cause({"code": "TD702", "message": "the autograd profiler is switched on ..."})
    """
    code = str(finding.get("code"))
    if code == "TD702" and str(finding.get("message", "")).startswith("anomaly detection"):
        return "anomaly-detection"
    return CAUSES.get(code)


def as_finding_dict(finding: Any) -> dict[str, Any]:
    """A Finding as the Session's plain dict (a ``torchdoctor.lint.Finding`` or a mapping).

    Example:
        >>> as_finding_dict({"code": "TD201", "line": 3})["code"]
        'TD201'
    """
    if hasattr(finding, "to_dict"):
        return dict(finding.to_dict())
    if isinstance(finding, Mapping):
        return dict(finding)
    raise TypeError(
        f"a lint finding must be a torchdoctor.lint Finding or its dict, got "
        f"{type(finding).__name__}"
    )


#: findings about sampling or generation loops: no suspect of a training step's time
SAMPLING_LOOP_CODES = frozenset({"TD601", "TD603", "TD604", "TD606"})
#: findings on code that builds the model (a layer's definition in ``__init__``, a whole-model
#: cast, a DataParallel wrap): it runs once before the steps, so it is no suspect of the time
#: the steps spend outside every module (a LightningModule's Conv2d(bias=True) before a
#: BatchNorm2d was called "in unattributed code")
BUILD_TIME_CODES = frozenset({"TD501", "TD506", "TD701"})


def _training(session: Mapping[str, Any]) -> bool:
    """Steps end at optimizer steps or backward passes (a training run).

    Example:
        >>> _training({"config": {"step_boundary": "optimizer"}})
        True
    """
    return (session.get("config") or {}).get("step_boundary") in ("optimizer", "backward")


#: findings whose cost is the call on their line, model calls included (TD712: an evaluation
#: whose result is read every N steps; TD601: an encoder re-run by every denoising step): the
#: model calls made under the line measure them (``session["call_lines"]``). Not others: a
#: DataLoader built inside `trainer.fit(...)` is not what the whole training costs.
CALL_COST_CODES = frozenset({"TD712", "TD601"})


def _call_cost(finding: Mapping[str, Any]) -> bool:
    return str(finding.get("code")) in CALL_COST_CODES


def _heat(finding: Mapping[str, Any], session: Mapping[str, Any], step: float) -> tuple[float, str]:
    line = finding.get("line")
    path = finding.get("path")
    for record in session.get("syncs") or ():
        if record.get("line") == line and same_file(record.get("file"), path):
            per_step = record.get("per_step")
            times = fmt_count(per_step) if isinstance(per_step, int | float) else "?"
            count = float(per_step) if isinstance(per_step, int | float) else 1.0
            typical = min(step, median(session.get("step_ms")) or step)  # (one stalled step
            # of a short run must not make a sync every step negligible)
            if not isinstance(record.get("stall_ms"), int | float) and negligible_syncs(
                count, typical
            ):  # too few for this step's length even at 1 ms each: no suspect
                return 0.0, f"the line syncs {times}x per step, {NEGLIGIBLE_SYNCS}"
            # weighed as every sync rule weighs syncs: one sync per step in a 30 s LBFGS
            # step is no first suspect
            return sync_heat(count), f"the line syncs {times}x per step in the profile"
    span = _pattern(finding, session) if step > 0 else None
    if span is not None and span["total_ms"] > 0:  # a pattern over several lines: all of them
        return min(1.0, span["share"]), (
            f"its lines ({', '.join(str(n) for n in span['lines'])}) take "
            f"{fmt_ms(span['total_ms'])} per step, {100 * span['share']:.0f}% of the step "
            "(measured)"
        )
    measured = line_of(session, path, line) if step > 0 else None
    if measured is not None and measured["total_ms"] > 0:  # the line's own time (hot lines)
        return min(1.0, measured["share"]), (
            f"the line takes {fmt_ms(measured['total_ms'])} per step, "
            f"{100 * measured['share']:.0f}% of the step (measured)"
        )
    called = call_line_of(session, path, line) if step > 0 and _call_cost(finding) else None
    if called is not None and called["share"] >= NEGLIGIBLE_SHARE:  # a call into user code
        # that runs a model (GCN's test(...)): the model calls made under the line
        return min(1.0, called["share"]), (
            f"the model calls made under the line ({', '.join(called['modules'][:3])}) take "
            f"{fmt_ms(called['ms_per_step'])} per step, {100 * called['share']:.0f}% of the "
            "step (measured)"
        )
    loop = loop_of(session, path, line) if step > 0 else None
    if loop is not None and loop["total_ms"] > 0:  # a finding on a loop's `for`: its body
        return min(1.0, loop["share"]), (
            f"the loop's body (line {', '.join(str(n) for n in loop['lines'])}) takes "
            f"{fmt_ms(loop['own_ms'])} per step, {100 * loop['share']:.0f}% of the step "
            "(measured)"
        )
    best: tuple[float, str] = (0.0, "")
    if step <= 0 or not isinstance(line, int):
        return best
    if measured is None and line_not_run(session, path, line):
        return 0.0, NOT_RUN_NOTE
    inside_any = False
    for node, _ in walk(session.get("tree")):
        source = node.get("source") or {}
        if node.get("kind") not in ("module", "region") or not source.get("line"):
            continue
        start, end = int(source["line"]), int(source.get("end_line") or source["line"])
        if start <= line <= end and same_file(source.get("file"), path):
            inside_any = True
            fraction = node_ms(node) / step
            if fraction >= HOT_FRACTION and (best[1] == "" or fraction < best[0]):
                where = node.get("path") or node.get("name")
                best = (fraction, f"inside {where}, {pct(node_ms(node), step):.0f}% of the step")
    # A sync finding (TD2xx) that ran would be in the sync audit's records: not there, not run.
    is_sync_rule = str(finding.get("code") or "").startswith("TD2")
    # ... and a sampling/generation loop (TD601, TD603, TD604, TD606): no suspect of a training step
    sampling_loop = str(finding.get("code")) in SAMPLING_LOOP_CODES and _training(session)
    built = str(finding.get("code")) in BUILD_TIME_CODES
    if (best[1] or inside_any or is_sync_rule or sampling_loop or built
            or not _profiled_file(path, session)):  # fmt: skip
        return best
    unbuilt = module_never_called(session, path, line)
    if unbuilt:  # (a model the script defines and this run never built: makemore's others)
        return 0.0, f"in {unbuilt}, a module this run never called"
    # Outside every module and region of a file the profile ran: a suspect for the time no
    # module or region claims (ranked by that share, which it may or may not explain).
    # (less what the hot lines measured there: a top-level loss line, 130 of 134 ms)
    rest = unattributed_ms(session) - (root_lines_ms(session) or 0.0)
    if rest >= HOT_FRACTION * step:
        return rest / step, (
            f"outside every module and region, where {pct(rest, step):.0f}% of the step runs "
            "unattributed (a suspect, not a measurement)"
        )
    return best


def _pattern(finding: Mapping[str, Any], session: Mapping[str, Any]) -> dict[str, Any] | None:
    """The measured lines of a finding whose pattern spans several (``pattern_lines``: TD507's
    scores to its product with the values), added up; None for a one-line finding."""
    span = finding.get("pattern_lines")
    if not (isinstance(span, list | tuple) and len(span) == 2):
        return None
    return lines_between(session, finding.get("path"), int(span[0]), int(span[1]))


def _around_periodic_calls(
    finding: Mapping[str, Any], session: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The user line (``long_step_calls``) whose model calls made the periodic long steps
    long, inside the finding's lines (TD602's evaluation loop around ``logits = model(x)``),
    with the most extra time; None when there is none."""
    line, last = finding.get("line"), finding.get("end_line") or finding.get("line")
    rows = [
        r for r in session.get("long_step_calls") or ()
        if not r.get("package") and float(r.get("extra_ms") or 0.0) > 0
        and isinstance(line, int) and isinstance(r.get("line"), int)
        and line <= r["line"] <= int(last) and same_file(str(r.get("file")), str(finding.get("path")))
    ]  # fmt: skip
    return max(rows, key=lambda r: float(r["extra_ms"]), default=None)


def _periodic_finding(finding: Mapping[str, Any], row: Mapping[str, Any], heat: float) -> Advice:
    """A finding about the work of the periodic long steps: it joins that advice (cause
    ``periodic-work``), naming the loop and what its model calls cost there.

    Example:
        >>> f = {"code": "TD602", "message": "eval loop with autograd on", "path": "t.py",
        ...      "line": 9}
        >>> _periodic_finding(f, {"location": "t.py:10", "extra_ms": 29.6}, 0.0).evidence[0]
        't.py:9: TD602 eval loop with autograd on (the model calls under t.py:10 took 29.6 ms more in each long step)'
    """
    where = f"{os.path.basename(str(finding.get('path') or '?'))}:{finding.get('line', '?')}"
    return Advice(
        rule="lint",
        title=f"{finding.get('code')} in the periodic work ({where}): {finding.get('message')}",
        confidence="medium",
        evidence=[f"{where}: {finding.get('code')} {finding.get('message')} (the model calls "
                  f"under {row.get('location')} took {fmt_ms(float(row['extra_ms']))} more in "
                  "each long step)"],  # fmt: skip
        fix=str(finding.get("message") or ""),
        references=[str(finding.get("code"))],
        heat=heat,
        locations=[location(finding.get("path"), finding.get("line"))],
        cause="periodic-work",
    )


def _runtime_cost(finding: Mapping[str, Any], cpu_run: bool) -> bool:
    rule = RULES.get(str(finding.get("code")))
    return rule is None or (rule.runtime_cost and not (cpu_run and rule.cuda_only))


def _measured(finding: Mapping[str, Any], session: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A finding's measured lines, added up: its pattern's, its line's, or its loop's body."""
    found = _pattern(finding, session)
    if found is None or found["total_ms"] <= 0:
        found = line_of(session, finding.get("path"), finding.get("line"))
    if found is None or found["total_ms"] <= 0:
        found = loop_of(session, finding.get("path"), finding.get("line"))
    return found


def _lines(finding: Mapping[str, Any], measured: Mapping[str, Any] | None) -> list[Any]:
    """The finding's line, then the other measured lines of its pattern (``pattern_lines``)."""
    line = finding.get("line")
    if not finding.get("pattern_lines") or not measured:
        return [line]
    return [line, *(n for n in measured.get("lines") or () if n != line)]


def suspects(session: Mapping[str, Any]) -> list[str]:
    """``file:line CODE message`` of the attached findings outside every module and region of a
    profiled file: where the step's unattributed time may go.

    Example:
        >>> suspects({"lint": []})
        []
    """
    return [text for text, _ in suspect_lines(session)]


def suspect_lines(session: Mapping[str, Any]) -> list[tuple[str, str]]:
    """:func:`suspects` with each finding's location (``file:line`` as recorded).

    Example:
        >>> suspect_lines({"lint": []})
        []
    """
    out = []
    step = tree_step_ms(session)
    for finding in map(as_finding_dict, session.get("lint") or ()):
        _, why = _heat(finding, session, step)
        if why.startswith("outside every module"):
            where = f"{os.path.basename(str(finding.get('path')))}:{finding.get('line')}"
            out.append(
                (
                    f"{where} {finding.get('code')} {finding.get('message')}",
                    location(finding.get("path"), finding.get("line")),
                )
            )
    return out


def _place(why: str) -> str:
    if why.startswith("its ") and " findings' lines " in why:
        return "on measured lines"
    if why.startswith("outside every module"):
        return "in unattributed code"
    if why.startswith("the loop's body"):
        return "on a measured loop"
    return "on a measured line" if why.endswith("(measured)") else "on a hot line"


def _profiled_file(path: Any, session: Mapping[str, Any]) -> bool:
    """The file ran in the profiled steps: a sync, module or region was recorded in it, or it
    is the profiled script itself."""
    files = [r.get("file") for r in session.get("syncs") or ()]
    files += [(n.get("source") or {}).get("file") for n, _ in walk(session.get("tree"))]
    label = str(session.get("label") or "")
    return any(same_file(f, path) for f in files if f) or (bool(label) and same_file(label, path))


def lint_findings(session: Mapping[str, Any], lint: Sequence[Any] | None = None) -> list[Advice]:
    """Advice from lint findings (``lint`` or ``session["lint"]``), hot ones first.

    Findings may be ``torchdoctor.lint`` Finding objects or their dicts.

    Example:
        >>> f = {"code": "TD201", "severity": "warning", "message": ".item() in a loop",
        ...      "path": "t.py", "line": 3, "replacement": None}
        >>> lint_findings({"lint": [f]})[0].heat
        0.0
    """
    source = session.get("lint") or () if lint is None else lint
    findings = [f for f in map(as_finding_dict, source) if not contradicted(f, session)]
    # findings on a line with advice of its own (rule hot-line) are evidence there: one per line
    covered = [(row["file"], row["line"]) for row in hot_lines(session)]
    findings = [
        f for f in findings
        if not any(f.get("line") == line and same_file(file, str(f.get("path")))
                   for file, line in covered)
    ]  # fmt: skip
    step = tree_step_ms(session)
    advice: list[Advice] = []
    cold: dict[str, list[Mapping[str, Any]]] = {}
    negligible: set[int] = set()  # (measured under NEGLIGIBLE_SHARE: said so in the evidence)
    few_syncs: set[int] = set()  # (a recorded sync line, negligible for this step: said so)
    cpu_run = str((session.get("config") or {}).get("device")) == "cpu"
    heats = {id(f): _heat(f, session, step) for f in findings}
    # (slivers of one code in one file that add up: one suspect, told by the first: lint_groups)
    groups, joined = summed_findings([
        f for f in findings if heats[id(f)][1].endswith("(measured)")
        and heats[id(f)][0] < NEGLIGIBLE_SHARE and _runtime_cost(f, cpu_run)
        and not rare_loader(f, session)], lambda f: _measured(f, session))  # fmt: skip
    for finding in findings:
        rule = RULES.get(str(finding.get("code")))
        if (cpu_run and rule is not None and rule.cuda_only) or id(finding) in joined:
            continue  # (pinned memory on a CPU run; a finding its group's first one tells)
        group = groups.get(id(finding))
        heat, why = (group["measured"]["share"], group["why"]) if group else heats[id(finding)]
        periodic = _around_periodic_calls(finding, session)
        if periodic is not None:  # (the every-N-steps evaluation's loop: that advice's cause)
            advice.append(_periodic_finding(finding, periodic, heat))
            continue
        if why.endswith(NEGLIGIBLE_SYNCS):
            few_syncs.add(id(finding))
        if rare_loader(finding, session):
            heat = 0.0
        elif why.endswith("(measured)") and heat < NEGLIGIBLE_SHARE and group is None:
            heat = 0.0  # measured, and a sliver of the step: no suspect of its time
            negligible.add(id(finding))
        if heat <= 0 or (rule is not None and not rule.runtime_cost):  # (hygiene: no suspect)
            cold.setdefault(str(finding.get("code") or "?"), []).append(finding)
            continue
        where = f"{os.path.basename(str(finding.get('path') or '?'))}:{finding.get('line', '?')}"
        replacement = finding.get("replacement")
        cure = finding_cure(finding)  # the cure a hot line would get
        measured = _pattern(finding, session) if step > 0 else None
        if measured is None or measured["total_ms"] <= 0:
            measured = line_of(session, finding.get("path"), finding.get("line"))
        others = group["members"][1:] if group is not None else []
        if group is not None:  # (its group's lines, added up)
            where, measured = group["where"], group["measured"]
        if measured is None and step > 0 and _call_cost(finding):  # the model calls under it
            called = call_line_of(session, finding.get("path"), finding.get("line"))
            if called is not None:  # (its cause: a model call under it recomputed, if any)
                measured = {**called, "total_ms": called["ms_per_step"]}
        loop = None if measured is not None else loop_of(session, finding["path"], finding["line"])
        advice.append(
            Advice(
                rule="lint",
                title=f"{finding.get('code')} {_place(why)} ({where}): {finding.get('message')}",
                confidence="medium",
                evidence=[f"{where}: {why}"],
                fix=cure.fix
                if cure is not None
                else f"use {replacement}"
                if replacement
                else str(finding.get("message") or ""),
                references=[str(finding.get("code"))] + ([replacement] if replacement else []),
                heat=heat,
                # (and the measured lines of its pattern: their own hot-line advice joins it)
                locations=[location(finding.get("path"), n) for n in _lines(finding, measured)]
                + [location(f.get("path"), f.get("line")) for f in others],
                # (a finding on a line of a per-element loop joins the loop's advice)
                cause=_cause(finding)
                or loop_cause(measured)
                or (f"loop {loop['file']}:{loop['loop_line']}" if loop else None),
            )
        )
        if loop is not None:  # a finding on a loop's `for`: its body's measured lines (the
            measured = loop  # evidence says so: _heat)
        if cure is not None and measured is not None and measured["total_ms"] > 0:
            cure_saving(advice[-1], step, measured["share"], cure, session,
                        measured.get("owners"))  # (own time; owners: dropout in SDPA's way)
            advice[-1].evidence.append(saving_note(cure, len(measured.get("lines") or ())))
    advice.sort(key=lambda a: a.heat, reverse=True)
    advice = advice[:MAX_HOT]
    return advice + cold_advice(cold, negligible, few_syncs, _cause)
