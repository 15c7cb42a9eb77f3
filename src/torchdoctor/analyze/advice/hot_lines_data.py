"""Read-only helpers over the Session's ``hot_lines`` section, shared by the line rules.

A source line may appear once per node that owns it (a helper called from the step and from a
user module); :func:`measured_lines` merges those into one record per ``(file, line)``.

Example:
    >>> s = {"step_ms": {"mean": 10.0}, "hot_lines": {"lines": [
    ...     {"file": "/a/t.py", "line": 3, "owner": "", "total_ms": {"mean": 4.0},
    ...      "forward_ms": {"mean": 3.0}, "backward_ms": {"mean": 1.0}, "calls_per_step": 8,
    ...      "torch_calls_per_step": 16, "top_ops": []}]}}
    >>> [(r["location"], r["share"]) for r in hot_lines(s)]
    [('t.py:3', 0.4)]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import center, same_file, tree_step_ms, walk
from torchdoctor.analyze.advice.recompute import MIN_REPEATS, invariant_cause

#: a line is hot (gets advice of its own) from this share of the step
HOT_SHARE = 0.05
#: at most this many lines get advice of their own
MAX_LINE_ADVICE = 5


def measured_lines(session: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record per measured ``(file, line)``, heaviest first: forward/backward/total ms per
    step (means), ``profiler_ms`` (the profiler's estimated own cost in them: its calls x its
    calibrated cost per timed call), ``own_ms`` (the rest) and its ``share`` of the step,
    executions and torch calls per step, merged top ops, owners, and the first record's
    function, code and library frames.

    Example:
        >>> measured_lines({"hot_lines": None})
        []
    """
    section = session.get("hot_lines") or {}
    step = tree_step_ms(session)
    calls_of = {  # a module's or region's calls per step: how often its lines' frame runs
        str(node.get("path")): float(node.get("calls_per_step") or 0.0)
        for node, _ in walk(session.get("tree"))
        if node.get("kind") in ("module", "region")
    }
    merged: dict[tuple[str, Any], dict[str, Any]] = {}
    for line in section.get("lines") or ():
        key = (str(line.get("file")), line.get("line"))
        row = merged.get(key)
        if row is None:
            row = merged[key] = {
                "file": key[0],
                "line": key[1],
                "location": line.get("location") or f"{os.path.basename(key[0])}:{key[1]}",
                "function": line.get("function"),
                "code": line.get("code") or "",
                "loop_line": line.get("loop_line"),  # the Python loop it is in (None: none)
                "carried": bool(line.get("carried")),  # (a recurrence's line: collect/source_lines)
                "forward_ms": 0.0,
                "backward_ms": 0.0,
                "total_ms": 0.0,
                "calls_per_step": 0.0,
                "torch_calls_per_step": 0.0,
                "ops": {},
                "owners": [],
                "via": list(line.get("via") or ()),
                "steps": section.get("steps"),
                "called_from": _caller_text(line.get("called_from")),
                "invocations_per_step": 0.0,
                "_callers": [],
            }
        row["forward_ms"] += center(line.get("forward_ms"))
        row["backward_ms"] += center(line.get("backward_ms"))
        row["total_ms"] += center(line.get("total_ms"))
        row["calls_per_step"] += float(line.get("calls_per_step") or 0.0)
        row["torch_calls_per_step"] += float(line.get("torch_calls_per_step") or 0.0)
        owner = str(line.get("owner") or "")
        row["owners"].append(owner)
        if owner in calls_of:  # the line runs in that module's forward (or that region)
            row["invocations_per_step"] += calls_of[owner]
        else:
            caller = line.get("called_from")
            if isinstance(caller, Mapping) and caller.get("location"):
                row["_callers"].append(str(caller["location"]))
        for op in line.get("top_ops") or ():
            acc = row["ops"].setdefault(str(op.get("op")), [0.0, 0.0, 0.0])
            acc[0] += float(op.get("forward_ms") or 0.0)
            acc[1] += float(op.get("backward_ms") or 0.0)
            acc[2] += float(op.get("calls_per_step") or 0.0)
    per_call_us = _per_timed_call_us(session)
    no_grad_us = _per_timed_call_us(session, "no_grad_call_us") or per_call_us
    first_us = _first_call_us(session, per_call_us)
    by_location = {}
    for row in merged.values():
        by_location.setdefault(row["location"], 0.0)
        by_location[row["location"]] += row["calls_per_step"]
    out = []
    for row in merged.values():
        # a function's line: it runs once per execution of the line that called the function
        row["invocations_per_step"] += sum(by_location.get(c, 0.0) for c in row.pop("_callers"))
        # the profiler's own cost per timed torch call (hot lines, the sync audit, the calls
        # they see around it), estimated from its calibration: a line of many small calls
        # (clip_grad_norm_ over 60 parameters) looks slower than it is; its share leaves it out.
        # An execution's first call pays only the part inside the line's clock: the rest is in
        # the gaps before its later calls (char-rnn's one-call `tensor[c] = ...`, 40,000 a step)
        # A line with no backward made no autograd node: its calls pay no hooks' cost
        torch_calls = row["torch_calls_per_step"]
        first_calls = min(row["calls_per_step"], torch_calls)
        later_us = per_call_us if row["backward_ms"] > 0 else no_grad_us
        row["profiler_ms"] = min(
            0.75 * row["total_ms"],
            (first_calls * first_us + (torch_calls - first_calls) * later_us) / 1000.0,
        )
        row["own_ms"] = row["total_ms"] - row["profiler_ms"]
        row["share"] = row["own_ms"] / step if step > 0 else 0.0
        row["top_ops"] = sorted(
            (
                {"op": op, "forward_ms": f, "backward_ms": b, "calls_per_step": c}
                for op, (f, b, c) in row.pop("ops").items()
            ),
            key=lambda o: -(o["forward_ms"] + o["backward_ms"]),
        )
        out.append(row)
    out.sort(key=lambda r: -r["own_ms"])
    return out


def _per_timed_call_us(session: Mapping[str, Any], key: str = "per_timed_call_us") -> float:
    """``config.profiler_overhead.per_timed_call_us`` (0 when the run did not record it), or
    another of its per-call costs (``no_grad_call_us``: that of calls that made no autograd
    node; 0 when not recorded).

    Example:
        >>> _per_timed_call_us({"config": {"profiler_overhead": {"per_timed_call_us": 7.5}}})
        7.5
    """
    overhead = (session.get("config") or {}).get("profiler_overhead") or {}
    value = overhead.get(key)
    return float(value) if isinstance(value, (int, float)) and value > 0 else 0.0


def _first_call_us(session: Mapping[str, Any], per_call_us: float) -> float:
    """``config.profiler_overhead.first_call_us``, the profiler's cost inside a line's clock on
    an execution's first timed call; ``per_call_us`` for a session that did not record it.

    Example:
        >>> _first_call_us({"config": {"profiler_overhead": {"first_call_us": 2.5}}}, 13.0)
        2.5
        >>> _first_call_us({"config": {}}, 13.0)
        13.0
    """
    overhead = (session.get("config") or {}).get("profiler_overhead") or {}
    value = overhead.get("first_call_us")
    return float(value) if isinstance(value, (int, float)) and value >= 0 else per_call_us


def _caller_text(caller: Any) -> str | None:
    if not isinstance(caller, Mapping) or not caller.get("location"):
        return None
    name = caller.get("function")
    function = f" ({'module level' if name == '<module>' else name})" if name else ""
    return f"{caller['location']}{function}"


def hot_lines(session: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The lines that get advice of their own: ``>= HOT_SHARE`` of the step, at most
    ``MAX_LINE_ADVICE``, heaviest first.

    Example:
        >>> def row(line, ms):
        ...     return {"file": "/a/t.py", "line": line, "owner": "", "total_ms": {"mean": ms},
        ...             "forward_ms": {"mean": ms}, "backward_ms": {"mean": 0.0}, "calls_per_step": 1,
        ...             "torch_calls_per_step": 1, "top_ops": []}
        >>> s = {"step_ms": {"mean": 100.0}, "hot_lines": {"lines": [row(3, 20.0), row(9, 1.0)]}}
        >>> [(r["line"], r["share"]) for r in hot_lines(s)]  # line 9 is 1% of the step: not hot
        [(3, 0.2)]
    """
    return [r for r in measured_lines(session) if r["share"] >= HOT_SHARE][:MAX_LINE_ADVICE]


def line_of(
    session: Mapping[str, Any], path: Any, line: Any, rows: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The measured record of ``path:line`` (None when the line was not measured).

    Example:
        >>> line_of({"hot_lines": None}, "t.py", 3) is None
        True
    """
    for row in measured_lines(session) if rows is None else rows:
        if row["line"] == line and same_file(row["file"], str(path)):
            return row
    return None


def loop_of(
    session: Mapping[str, Any], path: Any, line: Any, rows: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The measured lines of the Python loop that starts at ``path:line``, added up: a finding
    reported on a loop's ``for`` (TD304, TD305) is about its body's lines. ``{"file",
    "loop_line", "total_ms", "own_ms", "share", "lines"}``, or None when none was measured.

    Example:
        >>> row = {"file": "/a/t.py", "line": 60, "loop_line": 59, "total_ms": {"mean": 2.0}}
        >>> loop_of({"step_ms": {"mean": 10.0}, "hot_lines": {"lines": [row]}}, "t.py", 59)["share"]
        0.2
    """
    body = [
        r
        for r in (measured_lines(session) if rows is None else rows)
        if r.get("loop_line") == line and same_file(r["file"], str(path))
    ]
    return _added_up(body, loop_line=line)


def lines_between(
    session: Mapping[str, Any], path: Any, first: int, last: int,
    rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """The measured lines ``first`` to ``last`` of ``path``, added up (the shape of
    :func:`loop_of`): a lint pattern spread over several statements (a finding's
    ``pattern_lines``: hand-written attention from its scores to its product with the values).

    Example:
        >>> rows = [{"file": "/a/m.py", "line": n, "total_ms": {"mean": 1.0}} for n in (62, 64, 70)]
        >>> span = lines_between({"step_ms": {"mean": 10.0}, "hot_lines": {"lines": rows}},
        ...                      "m.py", 62, 66)
        >>> span["lines"], span["share"]
        ([62, 64], 0.2)
    """
    body = [
        r
        for r in (measured_lines(session) if rows is None else rows)
        if isinstance(r["line"], int) and first <= r["line"] <= last
        and same_file(r["file"], str(path))
    ]  # fmt: skip
    return _added_up(sorted(body, key=lambda r: r["line"]), loop_line=None)


def _added_up(body: list[dict[str, Any]], loop_line: int | None) -> dict[str, Any] | None:
    if not body:
        return None
    return {
        "file": body[0]["file"],
        "loop_line": loop_line,
        "total_ms": sum(r["total_ms"] for r in body),
        "own_ms": sum(r["own_ms"] for r in body),
        "share": sum(r["share"] for r in body),
        "lines": [r["line"] for r in body],
        "owners": sorted({str(o or "") for r in body for o in r.get("owners") or ()}),
    }


def root_lines_ms(session: Mapping[str, Any]) -> float | None:
    """Time per step of the measured lines outside every module and region (owner: the
    step); None when no line was measured at all (lines were not collected).

    Example:
        >>> root_lines_ms({"hot_lines": {"lines": [{"owner": "", "total_ms": {"mean": 1.5}}]}})
        1.5
        >>> root_lines_ms({"hot_lines": None}) is None
        True
    """
    lines = (session.get("hot_lines") or {}).get("lines")
    if not lines:
        return None
    return sum(center(line.get("total_ms")) for line in lines if not line.get("owner"))


def call_line_of(session: Mapping[str, Any], path: Any, line: Any) -> dict[str, Any] | None:
    """The model calls made under ``path:line`` (``session["call_lines"]``: their forward time,
    inclusive: GCN's ``loss_train, acc_train = test(model, ...)``, whose model call runs inside
    ``test()``), with ``share`` of the step; None when no model call ran under the line.

    Example:
        >>> row = {"file": "/a/main.py", "line": 181, "ms_per_step": 3.0, "modules": ["GCN"]}
        >>> call_line_of({"step_ms": {"mean": 12.0}, "call_lines": [row]}, "main.py", 181)["share"]
        0.25
    """
    step = tree_step_ms(session)
    recomputed = {str(r.get("path")): r for r in session.get("recomputation") or ()
                  if float(r.get("identical_input_calls") or 0.0) >= MIN_REPEATS}  # fmt: skip
    for row in session.get("call_lines") or ():
        if row.get("line") == line and same_file(row.get("file"), str(path)):
            ms = float(row.get("ms_per_step") or 0.0)
            # (a module it calls recomputed on identical inputs: that advice's cause)
            again = [recomputed[m] for m in row.get("modules") or () if m in recomputed]
            cause = {"cause": invariant_cause(again[0])} if again else {}
            return {**row, "share": ms / step if step > 0 else 0.0, **cause}
    return None


def not_sdpa_by_owner(session: Mapping[str, Any]) -> dict[str, tuple[Mapping[str, Any], ...]]:
    """Per owner (a module path), the statements that ran in its attention and make it other
    than what fused SDPA computes (``hot_lines``' ``attention_forms``, collected by
    ``collect/attention_form.py``).

    Example:
        >>> form = {"owners": ["h.0.attn"], "blockers": [{"location": "a.py:9"}]}
        >>> not_sdpa_by_owner({"hot_lines": {"attention_forms": [form]}})
        {'h.0.attn': ({'location': 'a.py:9'},)}
    """
    found: dict[str, list[Mapping[str, Any]]] = {}
    for form in (session.get("hot_lines") or {}).get("attention_forms") or ():
        for owner in form.get("owners") or ():
            found.setdefault(str(owner), []).extend(form.get("blockers") or ())
    return {owner: tuple(blockers) for owner, blockers in found.items()}


def line_not_run(session: Mapping[str, Any], path: Any, line: int) -> bool:
    """The hot lines timed the steps (no compiled module hid them), and ``path:line`` lies in
    a module of the user's own (its source span in that file), yet no torch call came from it:
    the line did not run in the measured steps (a branch not taken: x-transformers'
    ``if self.sigsoftmax_logits:``), so its finding is no suspect of their time.

    Example:
        >>> line_not_run({"hot_lines": None}, "t.py", 3)
        False
    """
    section = session.get("hot_lines")
    if not isinstance(section, Mapping) or not section.get("steps"):
        return False
    inside = False
    for node, _ in walk(session.get("tree")):
        if "OptimizedModule" in str(node.get("type") or ""):
            return False  # (a compiled graph's lines run in C++: the mode sees none of them)
        source = node.get("source") or {}
        if node.get("kind") != "module" or not source.get("line"):
            continue
        start, end = int(source["line"]), int(source.get("end_line") or source["line"])
        inside = inside or (start <= line <= end and same_file(source.get("file"), path))
    return inside


#: the run's model calls per step over the typical detailed steps' outside this range are
#: no steady loop to scale by (and within 20% of 1, no scaling is worth stating)
CALLS_FACTOR_RANGE = (0.2, 20.0)


def run_calls_factor(session: Mapping[str, Any]) -> float | None:
    """The run's mean outermost model calls per step over the typical detailed steps' mean
    (``steps[i].model_calls``; outlier steps left out of the detailed side, as the hot lines
    leave them out), when every step counted them and it differs from 1 by 20% or more: what
    a per-call cost measured on the hot lines weighs over the whole run. An RL loop whose step
    is an episode (pytorch/examples reinforce) had its detail windows on early, short
    episodes: 93 policy calls a step against 288 over the run. None otherwise.

    Example:
        >>> steps = [{"index": i, "model_calls": 10 if i < 5 else 30, "detailed": i < 5}
        ...          for i in range(20)]
        >>> run_calls_factor({"steps": steps})
        2.5
        >>> run_calls_factor({"steps": [{"index": 0, "model_calls": 3, "detailed": True}]})
    """
    steps = [s for s in session.get("steps") or () if s.get("wall_ms") is not None
             or s.get("model_calls") is not None]  # fmt: skip
    counted = [float(s["model_calls"]) for s in steps if s.get("model_calls")]
    if not steps or len(counted) < len(steps):
        return None
    outliers = set(((session.get("config") or {}).get("detail") or {}).get("outlier_steps") or ())
    detailed = [float(s["model_calls"]) for s in steps
                if s.get("detailed") and int(s.get("index", -1)) not in outliers]  # fmt: skip
    if len(detailed) < 2 or len(counted) <= len(detailed):
        return None
    factor = (sum(counted) / len(counted)) / (sum(detailed) / len(detailed))
    low, high = CALLS_FACTOR_RANGE
    if not low <= factor <= high or abs(factor - 1.0) < 0.2:
        return None
    return factor


def pattern_span(
    session: Mapping[str, Any], row: Mapping[str, Any], findings: list[Mapping[str, Any]],
    codes: Any,
) -> dict[str, Any] | None:  # fmt: skip
    """The measured lines of the pattern a finding on ``row`` spans (its ``pattern_lines``;
    ``codes``: the codes whose cure takes the whole pattern), added up, when they are more
    than the row: pytorch/examples GAT's dense attention, TD514 on its ``torch.where`` line,
    spans the mask's fill, the softmax, its dropout and its product (5 lines, 6.3 s of a step,
    where its own line was 0.8 s).

    Example:
        >>> rows = [{"file": "/a/m.py", "line": n, "total_ms": {"mean": 1.0}} for n in (9, 10, 12)]
        >>> session = {"step_ms": {"mean": 10.0}, "hot_lines": {"lines": rows}}
        >>> finding = {"code": "TD514", "pattern_lines": [9, 12]}
        >>> pattern_span(session, {"file": "/a/m.py", "line": 10}, [finding], {"TD514"})["lines"]
        [9, 10, 12]
    """
    for finding in findings:
        span = finding.get("pattern_lines")
        if str(finding.get("code")) in codes and isinstance(span, list | tuple) and len(span) == 2:
            found = lines_between(session, row["file"], int(span[0]), int(span[1]))
            if found is not None and len(found["lines"]) > 1:
                return found
    return None
