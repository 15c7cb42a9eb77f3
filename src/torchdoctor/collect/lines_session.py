"""The Session's ``hot_lines`` section from the per-step line tables of ``collect/lines.py``.

Per user source line (and the tree node owning it: the step, a region or a user module):
forward and backward ms per step (Stats with mean), executions and torch calls per step, the
heaviest torch ops, the library frames it went through, and its source text. Lines of a node
refine that node's ``(self)`` row (a node without children: the node itself); the tree's
``(self)`` rows get a ``hot_lines`` list pointing at their heaviest lines.

Invariant: per step, the lines owned by a node never add up past that node's self time
(backward past its self backward, forward + backward past its self total). The two clocks
agree by construction on the host (the same readings bound both); where the graph-hook
attribution of the tree and the per-node measurement of the lines disagree, the lines are
scaled down to fit, and the line says so (``scaled``: fitted / measured time, when under 0.95).

Example:
    >>> step = {"wall_ms": 10.0, "phases": {"forward": 6.0, "backward": 3.0}, "forward": {},
    ...         "backward": {}, "lines": {("t.py", 3, "f", 1, 0): {"forward_ns": 4e6,
    ...         "backward_ns": 2e6, "calls": 8, "torch_calls": 16, "ops": {}, "via": {}}}}
    >>> section = hot_lines_section([step], parent=[-1], path=[""], kind=["root"])
    >>> line = section["lines"][0]
    >>> line["line"], line["total_ms"]["mean"], line["pct_of_step"], line["calls_per_step"]
    (3, 6.0, 60.0, 8.0)
"""

from __future__ import annotations

import ast
import linecache
from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.collect.assemble import stat_with_mean
from torchdoctor.collect.attention_form import attention_forms
from torchdoctor.collect.source_lines import carried, parsed
from torchdoctor.session_read import fmt_count
from torchdoctor.source_names import short_file

MAX_LINES = 50
TOP_OPS = 5
TOP_VIA = 3
TREE_POINTERS = 3
#: timed calls per step from which the section notes the collector's own cost
MANY_CALLS = 500


def _self_times(step: Mapping[str, Any], node: int, kids: Sequence[int]) -> tuple[float, float]:
    """(self backward ms, self total ms) of a node in one step summary."""
    fwd, bwd = step["forward"], step["backward"]
    if node == 0:
        own_b = step["phases"].get("backward", 0.0)
        own_total = step["wall_ms"]
    else:
        own_b = bwd.get(node, 0.0)
        own_total = fwd.get(node, 0.0) + own_b
    kids_b = sum(bwd.get(k, 0.0) for k in kids)
    kids_total = sum(fwd.get(k, 0.0) + bwd.get(k, 0.0) for k in kids)
    return max(0.0, own_b - kids_b), max(0.0, own_total - kids_total)


def _fitted(
    step: Mapping[str, Any], children: Mapping[int, list[int]]
) -> dict[tuple, tuple[float, float, float, float]]:
    """Per line key: (forward ms, backward ms, forward scale, backward scale) with each
    owner's lines fitted into its self time (see the module docstring)."""
    by_owner: dict[int, list[tuple]] = {}
    for key in step["lines"]:
        by_owner.setdefault(key[4], []).append(key)
    out: dict[tuple, tuple[float, float, float]] = {}
    for owner, keys in by_owner.items():
        self_b, self_total = _self_times(step, owner, children.get(owner, []))
        fwd = {k: step["lines"][k]["forward_ns"] / 1e6 for k in keys}
        bwd = {k: step["lines"][k]["backward_ns"] / 1e6 for k in keys}
        sum_b = sum(bwd.values())
        scale_b = min(1.0, self_b / sum_b) if sum_b > 0 else 1.0
        room = max(0.0, self_total - sum_b * scale_b)
        sum_f = sum(fwd.values())
        scale_f = min(1.0, room / sum_f) if sum_f > 0 else 1.0
        for k in keys:
            out[k] = (fwd[k] * scale_f, bwd[k] * scale_b, scale_f, scale_b)
    return out


def _owner_scales(
    every: Sequence[Mapping[str, Any]],
    timed: Sequence[Mapping[str, Any]],
    fitted: Sequence[Mapping[tuple, tuple[float, float, float, float]]],
    children: Mapping[int, list[int]],
) -> dict[int, tuple[float, float]]:
    """Per owner node of lines, ``(forward scale, backward scale)`` (each <= 1) that fit its
    lines (``fitted``: per timed step, :func:`_fitted`'s figures) into its mean self time over
    ``every`` detailed step, which the tree shows: lines are timed in some detailed steps only
    (``collect/schedule.py`` LINES_EVERY), and timing them adds to those steps' self time, not
    to the lines' own figures. Each is scaled only as far as the lines' mean would pass the
    node's: the backward to its self backward, the forward to what is left of its self total.
    Owners needing no scaling are left out.

    Example:
        >>> lines = {("t.py", 3, "f", 1, 0): {"forward_ns": 8e6, "backward_ns": 2e6}}
        >>> timed = {"wall_ms": 10.0, "phases": {"backward": 2.0}, "forward": {},
        ...          "backward": {}, "lines": lines}
        >>> light = {"wall_ms": 8.0, "phases": {"backward": 2.0}, "forward": {},
        ...          "backward": {}, "lines": None}
        >>> fit = [_fitted(timed, {})]
        >>> _owner_scales([timed, light], [timed], fit, {})  # forward 8 -> 7 ms (9 - 2 in all)
        {0: (0.875, 1.0)}
    """
    if len(every) == len(timed):
        return {}
    sums: dict[int, list[float]] = {}  # owner -> [lines' forward, lines' backward] over steps
    for step in fitted:
        for key, (fwd, bwd, _, _) in step.items():
            acc = sums.setdefault(key[4], [0.0, 0.0])
            acc[0], acc[1] = acc[0] + fwd, acc[1] + bwd
    out = {}
    for owner, (lines_f, lines_b) in sums.items():
        kids = children.get(owner, [])
        all_b, all_total = (sum(v) / len(every) for v in zip(*(_self_times(s, owner, kids)
                                                               for s in every)))  # fmt: skip
        lines_f, lines_b = lines_f / len(timed), lines_b / len(timed)
        backward = min(1.0, all_b / lines_b) if lines_b > 0 else 1.0
        room = max(0.0, all_total - backward * lines_b)
        forward = min(1.0, room / lines_f) if lines_f > 0 else 1.0
        if forward < 1.0 or backward < 1.0:
            out[owner] = (forward, backward)
    return out


def hot_lines_section(
    steps: Sequence[Mapping[str, Any]],
    *,
    parent: Sequence[int],
    path: Sequence[str],
    kind: Sequence[str],
    max_lines: int = MAX_LINES,
) -> dict[str, Any] | None:
    """The section from step summaries carrying ``lines`` (None when lines were not collected).

    ``parent``/``path``/``kind`` are the profiler's node registry.

    Example:
        >>> lines = {("t.py", n, "f", 1, 0): {"forward_ns": n * 1e6, "backward_ns": 0.0, "calls": 1,
        ...          "torch_calls": 1, "ops": {}, "via": {}} for n in (1, 2, 3)}
        >>> step = {"wall_ms": 10.0, "phases": {}, "forward": {}, "backward": {}, "lines": lines}
        >>> section = hot_lines_section([step], parent=[-1], path=[""], kind=["root"], max_lines=2)
        >>> [r["line"] for r in section["lines"]], section["notes"]
        ([3, 2], ['1 lighter line(s) left out'])
    """
    every = steps
    steps = [s for s in steps if s.get("lines") is not None]
    if not steps:
        return None
    children: dict[int, list[int]] = {}
    for step in every:
        for node in {*step["forward"], *step["backward"]}:
            if node > 0:
                up = max(parent[node], 0)
                if node not in children.setdefault(up, []):
                    children[up].append(node)
    count = len(steps)
    walls = [s["wall_ms"] for s in steps]
    wall = sum(walls) / count if count else 0.0
    series: dict[tuple, dict[str, Any]] = {}
    every_fit = [_fitted(step, children) for step in steps]
    scales = _owner_scales(every, steps, every_fit, children)
    for index, step in enumerate(steps):
        fitted = every_fit[index]
        for key, entry in step["lines"].items():
            agg = series.get(key)
            if agg is None:
                agg = series[key] = {
                    "fwd": [0.0] * count,
                    "bwd": [0.0] * count,
                    "calls": 0,
                    "torch_calls": 0,
                    "ops": {},
                    "via": {},
                    "raw": 0.0,
                    "callers": {},
                }
            fwd, bwd, scale_f, scale_b = fitted[key]
            if key[4] in scales:  # (lines timed in some detailed steps: fit the tree's mean)
                forward_scale, backward_scale = scales[key[4]]
                fwd, bwd = fwd * forward_scale, bwd * backward_scale
                scale_f, scale_b = scale_f * forward_scale, scale_b * backward_scale
            agg["fwd"][index] = fwd
            agg["bwd"][index] = bwd
            agg["raw"] += (entry["forward_ns"] + entry["backward_ns"]) / 1e6
            agg["calls"] += entry["calls"]
            agg["torch_calls"] += entry["torch_calls"]
            for op, (f_ns, calls, b_ns) in entry["ops"].items():
                acc = agg["ops"].setdefault(op, [0.0, 0, 0.0])
                acc[0] += f_ns * scale_f / 1e6
                acc[1] += calls
                acc[2] += b_ns * scale_b / 1e6
            for where, ns in entry["via"].items():
                agg["via"][where] = agg["via"].get(where, 0.0) + ns / 1e6
            for where, n in (entry.get("callers") or {}).items():
                agg["callers"][where] = agg["callers"].get(where, 0) + n
    lines = [_line(key, agg, count, wall, path, kind) for key, agg in series.items()]
    lines.sort(key=lambda r: -r["total_ms"]["mean"])
    notes = []
    calls = sum(r["torch_calls_per_step"] for r in lines)
    if calls >= MANY_CALLS:
        notes.append(
            f"{fmt_count(calls)} torch calls per step were timed from user lines; each costs the "
            "profiler a few microseconds, so lines made of many tiny calls look slower than "
            "they are (their share of the step is still comparable between lines)"
        )
    if len(lines) > max_lines:
        notes.append(f"{len(lines) - max_lines} lighter line(s) left out")
    if count < len(every):
        notes.append(
            f"lines timed in {count} of {len(every)} detailed steps (one in 2: timing each "
            "torch call costs microseconds); their ms are those steps' means, fitted to their "
            "node's (self) over all detailed steps"
        )
    carried = sum(1 for s in steps if any(e.get("backward_estimated") for e in s["lines"].values()))
    if carried == count:  # (hooked in a step left out: a warm-up step, the first one)
        notes.append(
            "backward per line measured by graph hooks in a step before these (hooks cost "
            "more than the calls they time); in these, each line and op's measured backward "
            "per call x its calls"
        )
    elif carried:
        notes.append(
            f"backward per line measured by graph hooks in {count - carried} of {count} steps "
            "(hooks cost more than the calls they time); in the others, each line and op's "
            "last measured backward per call x its calls"
        )
    if any(r.get("scaled") is not None for r in lines[:max_lines]):
        notes.append(
            "some lines were scaled down to fit the (self) time of their node (the tree's "
            "backward attribution and the lines' per-node measurement disagreed there)"
        )
    section = {
        "mechanism": "torch_function_mode",
        "steps": count,
        "detailed_steps": len(every),
        "backward_carried_steps": carried,
        "lines": lines[:max_lines],
        "notes": notes,
    }
    forms = attention_forms(lines)  # (from every line: a light one may be what decides)
    if forms:
        section["attention_forms"] = forms
    return section


def _line(
    key: tuple,
    agg: Mapping[str, Any],
    count: int,
    wall: float,
    path: Sequence[str],
    kind: Sequence[str],
) -> dict[str, Any]:
    file, line, function, first_line, owner = key
    total = [f + b for f, b in zip(agg["fwd"], agg["bwd"])]
    ops = sorted(agg["ops"].items(), key=lambda kv: -(kv[1][0] + kv[1][2]))
    via = sorted(agg["via"].items(), key=lambda kv: -kv[1])
    stats = stat_with_mean(total)
    out: dict[str, Any] = {
        "file": file,
        "line": line,
        "location": f"{short_file(file)}:{line}",
        "function": function,
        "function_line": first_line,
        "code": linecache.getline(file, line).strip() if line else "",
        "loop_line": enclosing_loop(file, line),
        "owner": path[owner] if owner else "",
        "owner_kind": kind[owner],
        "forward_ms": stat_with_mean(agg["fwd"]),
        "backward_ms": stat_with_mean(agg["bwd"]),
        "total_ms": stats,
        "pct_of_step": 100.0 * stats["mean"] / wall if wall > 0 else 0.0,
        "calls_per_step": agg["calls"] / count,
        "torch_calls_per_step": agg["torch_calls"] / count,
        "top_ops": [
            {
                "op": op,
                "forward_ms": f / count,
                "backward_ms": b / count,
                "calls_per_step": calls / count,
            }
            for op, (f, calls, b) in ops[:TOP_OPS]
        ],
        "via": [
            {"file": w[0], "line": w[1], "function": w[2], "ms": ms / count}
            for w, ms in via[:TOP_VIA]
        ],
    }
    if out["loop_line"] is not None and carried(file, line):  # (a recurrence: no batching)
        out["carried"] = True
    if agg["callers"]:  # the user line that calls this line's function most
        (c_file, c_line, c_function), _ = max(agg["callers"].items(), key=lambda kv: kv[1])
        out["called_from"] = {
            "file": c_file,
            "line": c_line,
            "function": c_function,
            "location": f"{short_file(c_file)}:{c_line}",
        }
    if agg["raw"] > 0 and sum(total) < 0.95 * agg["raw"]:  # fitted by more than 5% overall
        out["scaled"] = sum(total) / agg["raw"]
    return out


def point_tree_at_lines(
    tree: dict[str, Any] | None,
    section: Mapping[str, Any] | None,
    sampled: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Give each ``(self)`` row (or a childless owner) a ``hot_lines`` list: its heaviest lines
    as ``{"location", "file", "line", "total_ms"}``, in place. ``sampled``: the user lines
    sampled outside every torch call (``other_lines``: between steps; in a one-shot run, its
    imports and loading), which the step's own ``(self)`` row holds too.

    Example:
        >>> tree = {"path": "", "kind": "root", "children": [{"path": "(self)", "kind": "self"}]}
        >>> point_tree_at_lines(tree, {"lines": [{"owner": "", "file": "/a/t.py", "line": 3,
        ...     "location": "t.py:3", "total_ms": {"mean": 2.0}}]},
        ...     [{"file": "/a/t.py", "line": 1, "location": "t.py:1", "ms_per_step": 900.0},
        ...      {"file": "/a/t.py", "line": 3, "location": "t.py:3", "ms_per_step": 5000.0}])
        >>> [(row["location"], row["total_ms"]) for row in tree["children"][0]["hot_lines"]]
        [('t.py:1', 900.0), ('t.py:3', 2.0)]
    """
    if not tree or not (section or sampled):
        return
    by_owner: dict[str, list[Mapping[str, Any]]] = {}
    for line in (section or {}).get("lines") or ():
        by_owner.setdefault(str(line.get("owner") or ""), []).append(line)
    if sampled:  # (the step's own rows: heaviest first, measured and sampled together; a line
        # both measured and sampled keeps its measured time, whichever is larger)
        measured = by_owner.get("", [])
        seen = {str(r.get("location")) for r in measured}
        rows = measured + [
            {**row, "owner": "", "total_ms": {"mean": float(row.get("ms_per_step") or 0.0)}}
            for row in sampled
            if row.get("location") and row.get("line") is not None
            and not (row["location"] in seen or seen.add(row["location"]))
        ]
        rows.sort(key=lambda r: -float((r.get("total_ms") or {}).get("mean", 0.0)))
        by_owner[""] = rows

    def visit(node: dict[str, Any]) -> None:
        kids = node.get("children") or []
        if node.get("kind") != "self":
            mine = by_owner.get(str(node.get("path") or ""))
            if mine:
                target = next((k for k in kids if k.get("kind") == "self"), node)
                target["hot_lines"] = [
                    {
                        "location": r["location"],
                        "file": r["file"],
                        "line": r["line"],
                        "total_ms": (r.get("total_ms") or {}).get("mean", 0.0),
                    }
                    for r in mine[:TREE_POINTERS]
                ]
        for kid in kids:
            visit(kid)

    visit(tree)


_loops: dict[str, list[tuple[int, int]]] = {}


def enclosing_loop(file: str, line: int) -> int | None:
    """The first line of the innermost ``for``/``while`` statement whose lines hold ``line`` in
    ``file`` (None outside any loop, or when the source cannot be read), so the advice can
    treat the lines of one Python loop as one cause.

    Example:
        >>> import tempfile
        >>> src = chr(10).join(["x = 0", "for i in range(3):", "    y = i", "    while y:",
        ...                     "        y -= 1", ""])
        >>> with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        ...     _ = f.write(src)
        >>> [enclosing_loop(f.name, n) for n in (1, 3, 5)]
        [None, 2, 4]
    """
    spans = _loops.get(file)
    if spans is None:
        spans = _loops[file] = []
        tree = parsed(file)
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
                spans.append((node.lineno, node.end_lineno or node.lineno))
    inner = [start for start, end in spans if start <= line <= end]
    return max(inner) if inner else None
