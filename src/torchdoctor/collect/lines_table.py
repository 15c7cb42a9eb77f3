"""One step's line table from the hot-lines collector's raw records (``collect/lines.py``).

The collector's hot path appends flat records (no container object per call); when the step
ends, :func:`step_table` resolves their clock tokens in one call and sums them per user line:

- an *event* (``EVENT_FIELDS`` values) per timed torch call: the line's code and number, the
  owner node, the library frame it went through (code, line), the function, the two clock
  tokens, whether it began a new execution of the line, the Python time since the line's
  previous call (``gap``: host ns, or on CUDA the index of that call, -1 for none), and the
  calling user line (code, line) at a new execution;
- a *mark* (``MARK_FIELDS`` values) per backward hook that fired: the event, the graph node's
  number, 0 (pre-hook) or 1 (post-hook), the clock token.

Backward per (line, op) is measured on the graph nodes of sampled calls and scaled by calls /
sampled calls; in steps that hook nothing (the collector hooks one step of ``BACKWARD_EVERY``)
a site's last measured backward per call times its calls is used, and the line says so
(``backward_estimated``).

Example:
    >>> import torch
    >>> from torchdoctor.collect.clocks import CpuClock
    >>> code = step_table.__code__
    >>> events = [code, 7, 0, None, 0, torch.exp, 100, 400, True, -1, None, 0]
    >>> table = step_table(events, [], CpuClock(), host=True, created={}, sampled={},
    ...                    backward_per_call={})
    >>> [(key[1], row["forward_ns"], row["calls"]) for key, row in table.items()]
    [(7, 300.0, 1)]
"""

from __future__ import annotations

from typing import Any

from torchdoctor.collect.lines_install import op_name

EVENT_FIELDS = 12
MARK_FIELDS = 4
#: sites (line, op) whose last backward per call is kept; beyond it the memory is cleared
MAX_SITES = 4096


def step_table(
    events: list[Any],
    marks: list[Any],
    clock: Any,
    *,
    host: bool,
    created: dict[tuple, int],
    sampled: dict[tuple, int],
    backward_per_call: dict[tuple, float],
) -> dict[tuple, dict[str, Any]]:
    """``(file, line, function, first line, owner node) -> {"forward_ns", "backward_ns",
    "calls", "torch_calls", "ops", "via", "callers"}`` of one step (``host``: the tokens are
    host ns; ``created``/``sampled``: per site (code, line, func), the calls that made graph
    nodes and those whose nodes were hooked; ``backward_per_call`` is updated in place).
    """
    F = EVENT_FIELDS
    count = len(events) // F
    marks = [marks[i : i + MARK_FIELDS] for i in range(0, len(marks), MARK_FIELDS)]
    if host:  # host ns already: no resolve (CpuClock.resolve is float() of each)
        starts, ends = events[6::F], events[7::F]
        mark_ns = [m[3] for m in marks]
    else:
        ns = clock.resolve(events[6::F] + events[7::F] + [m[3] for m in marks])
        starts, ends, mark_ns = ns[:count], ns[count : 2 * count], ns[2 * count :]
    table: dict[tuple, dict[str, Any]] = {}
    keys: list[tuple] = []
    names: dict[Any, str] = {}
    for code, line, owner, via_code, via_line, func, start, end, new, gap, c_code, c_line in zip(
        events[0::F], events[1::F], events[2::F], events[3::F], events[4::F], events[5::F],
        starts, ends, events[8::F], events[9::F], events[10::F], events[11::F],
    ):  # fmt: skip
        key = (code.co_filename, line, code.co_name, code.co_firstlineno, owner)
        keys.append(key)
        entry = table.get(key)
        if entry is None:
            entry = table[key] = {
                "forward_ns": 0.0,
                "backward_ns": 0.0,
                "calls": 0,
                "torch_calls": 0,
                "ops": {},
                "via": {},
                "callers": {},
            }
        own = float(end - start) if end > start else 0.0
        spent = own
        if gap >= 0:
            spent += float(gap) if host else max(0.0, start - ends[gap])
        entry["forward_ns"] += spent
        entry["torch_calls"] += 1
        if new:
            entry["calls"] += 1
        if c_code is not None:
            where = (c_code.co_filename, c_line, c_code.co_name)
            callers = entry["callers"]
            callers[where] = callers.get(where, 0) + 1
        name = names.get(func)
        if name is None:
            name = names[func] = op_name(func)
        op = entry["ops"].get(name)
        if op is None:
            op = entry["ops"][name] = [0.0, 0, 0.0]
        op[0] += own
        op[1] += 1
        if via_code is not None:
            where = (via_code.co_filename, via_line, via_code.co_name)
            entry["via"][where] = entry["via"].get(where, 0.0) + spent
    events = [events[i : i + F] for i in range(0, len(events), F)]  # (backward: by index)
    open_: dict[int, float] = {}
    measured: dict[tuple, float] = {}  # site -> backward ns measured (scaled) this step
    for (event, node, which, _), t in zip(marks, mark_ns):
        if which == 0:
            open_[node] = t
        elif node in open_ and event < len(keys):
            code, line, func = events[event][0], events[event][1], events[event][5]
            site = (code, line, func)
            scale = created.get(site, 1) / max(1, sampled.get(site, 1))
            spent = max(0.0, t - open_.pop(node)) * scale
            measured[site] = measured.get(site, 0.0) + spent
            _add_backward(table[keys[event]], func, spent)
    if created:
        _carry_backward(table, events, keys, created, sampled, measured, backward_per_call)
    return table


def _add_backward(entry: dict[str, Any], func: Any, spent: float) -> None:
    entry["backward_ns"] += spent
    op = entry["ops"].setdefault(op_name(func), [0.0, 0, 0.0])
    op[2] += spent


def _carry_backward(
    table: dict[tuple, dict[str, Any]],
    events: list,
    keys: list[tuple],
    created: dict[tuple, int],
    sampled: dict[tuple, int],
    measured: dict[tuple, float],
    per_call: dict[tuple, float],
) -> None:
    """Sites whose nodes were hooked this step keep their backward per call; the others
    (steps that hook nothing) get it x their calls this step.

    Example:
        >>> entry = {"backward_ns": 0.0, "ops": {}}
        >>> per_call = {("c", 3, "f"): 50.0}
        >>> _carry_backward({"k": entry}, [["c", 3, 0, None, 0, "f"]], ["k"], {("c", 3, "f"): 4},
        ...                 {}, {}, per_call)
        >>> entry["backward_ns"], entry["backward_estimated"]
        (200.0, True)
    """
    where: dict[tuple, dict[tuple, int]] = {}  # site -> {table key: its calls this step}
    for event, key in zip(events, keys):
        counts = where.setdefault((event[0], event[1], event[5]), {})
        counts[key] = counts.get(key, 0) + 1
    for site, made in created.items():
        if sampled.get(site):
            per_call[site] = measured.get(site, 0.0) / made
        elif site in per_call and site in where:
            # one line run under several owners (a loop in each of a model's layers): each
            # owner's entry gets its share of the site's calls, not the last owner all of them
            counts = where[site]
            calls = sum(counts.values())
            for key, n in counts.items():
                entry = table[key]
                entry["backward_estimated"] = True
                _add_backward(entry, site[2], per_call[site] * made * n / calls)
    if len(per_call) > MAX_SITES:  # a bound for code that makes new sites forever
        per_call.clear()
