"""Turn per-step summaries into the Session's module tree, phases and recomputation list.

Each node carries Stats over the profiled steps (median, quartiles, extremes, and ``mean``).
Self times and the explicit ``(self)`` child are computed per step before summarizing, so they
are never negative. Means are additive where medians are not, so the renderer's shares use the
``mean`` (children's means never add up past their parent's); medians and spread describe
variability.

Example:
    >>> steps = [{"wall_ms": 4.0, "forward": {1: 3.0}, "backward": {}, "calls": {1: 1},
    ...           "activation": None, "identical": {}, "phases": {}}]
    >>> tree = build_tree(steps, parent=[-1, 0], path=["", "net"], name=["step", "net"],
    ...                   kind=["root", "module"], type_name=[None, "Linear"], source=[None, None])
    >>> [c["name"] for c in tree["children"]], tree["children"][1]["total_ms"]["mean"]
    (['net', '(self)'], 1.0)
"""

from __future__ import annotations

import linecache
from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.session import stat


def stat_with_mean(values: Sequence[float]) -> dict[str, float]:
    """A Stat plus the mean (additive across siblings).

    Example:
        >>> stat_with_mean([1.0, 3.0])["mean"]
        2.0
    """
    out = stat(values)
    out["mean"] = sum(values) / len(values) if values else 0.0
    return out


#: a detailed step over this multiple of the median detailed step is a stall or the loop's own
#: periodic work (a garbage collection, a checkpoint written, an evaluation): left out of the
#: tree, which shows where a typical step's time goes (the step-time distribution keeps it).
#: minGPT's chargpt samples 500 tokens in its first step, 6.9x its training steps: at 10x, that
#: step made the tree's mean step 2.7 s against 1.7 s, with 51 GPT calls a step.
TREE_OUTLIER = 3.0
#: ... unless more than this share of the steps (all of them when known, light ones included;
#: else the detailed ones) are such: that is the loop's shape
MAX_OUTLIER_SHARE = 0.15


#: ... and at least this much longer than it (a step of 20 us that took 70 us is noise, not
#: an evaluation)
OUTLIER_MIN_EXCESS_MS = 1.0


def outlier_limit(median_ms: float) -> float:
    """The wall time past which a detailed step is an outlier, given the median one.

    Example:
        >>> outlier_limit(1700.0), outlier_limit(0.02)
        (5100.0, 1.02)
    """
    return max(TREE_OUTLIER * median_ms, median_ms + OUTLIER_MIN_EXCESS_MS)


def own_ms(step: Mapping[str, Any]) -> float:
    """A step's wall ms less the time its thread waited for a core (``cpu_wait_ms``, when
    known): what the step's own work took. On a machine busy with other work, steps slowed by
    the wait are no periodic work of the loop (a second job made many steps long, and the rule
    then kept minGPT's one-off sampling step in the tree as "the loop's shape").

    Example:
        >>> own_ms({"wall_ms": 30.0, "cpu_wait_ms": 18.0}), own_ms({"wall_ms": 30.0})
        (12.0, 30.0)
    """
    return float(step["wall_ms"]) - float(step.get("cpu_wait_ms") or 0.0)


def long_limit(steps: Sequence[dict[str, Any]]) -> float:
    """The own ms (:func:`own_ms`) over which one of ``steps`` is long: :func:`outlier_limit`
    of their median.

    Example:
        >>> long_limit([{"wall_ms": 10.0}, {"wall_ms": 12.0}, {"wall_ms": 400.0}])
        36.0
    """
    walls = sorted(own_ms(s) for s in steps)
    return outlier_limit(walls[len(walls) // 2])


def typical_steps(
    steps: Sequence[dict[str, Any]], every: Sequence[float] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(kept, left out)``: the detailed steps without those over TREE_OUTLIER x the median,
    those that waited for a core over BUSY_SHARE of their time (when MIN_QUIET others did not)
    or whose hot lines stopped at the detail budget (``lines_cut``, ``RecentSteps`` in
    ``collect/profiler_steps.py``), with 5 steps or more, and when the steps over that limit
    are at most MAX_OUTLIER_SHARE of ``every`` step's own ms (:func:`own_ms`; the run's, light steps
    included; by default the detailed steps'): a window of 5 holding one evaluation is 20% of
    its steps but 1 of 59 in the run.

    Example:
        >>> steps = [{"wall_ms": 0.6}] * 29 + [{"wall_ms": 42.6}]  # one 42 ms stall
        >>> kept, out = typical_steps(steps)
        >>> len(kept), [s["wall_ms"] for s in out]
        (29, [42.6])
        >>> len(typical_steps(steps[-4:])[0])  # too few to tell
        4
        >>> window = [{"wall_ms": 11624.0}] + [{"wall_ms": 1700.0}] * 4  # an evaluation
        >>> len(typical_steps(window)[1]), len(typical_steps(window, [1700.0] * 58 + [11624.0])[1])
        (0, 1)
        >>> quiet, busy = {"wall_ms": 1.0, "cpu_wait_ms": 0.0}, {"wall_ms": 9.0, "cpu_wait_ms": 8.0}
        >>> [len(part) for part in typical_steps([quiet] * 3 + [busy] * 2)]  # (waited 89%)
        [3, 2]
    """
    if len(steps) < 5:
        return list(steps), []
    limit = long_limit(steps)
    out = [s for s in steps if own_ms(s) > limit or s.get("lines_cut")]
    every = every or [own_ms(s) for s in steps]
    share = sum(1 for ms in every if ms > limit) / len(every)
    if not out or share > MAX_OUTLIER_SHARE:
        out = []
    kept = [s for s in steps if not any(s is o for o in out)]
    # steps that waited for a core much of their time, while others did not: every module's
    # time in them holds the wait (a detail window in a busy minute made a 0.66 ms step's
    # layer_norm 17 ms)
    busy = [s for s in kept if waited_share(s) > BUSY_SHARE]
    if busy and len(kept) - len(busy) >= MIN_QUIET:
        out += busy
        kept = [s for s in kept if waited_share(s) <= BUSY_SHARE]
    return kept, out


#: a detailed step whose thread waited for a core over this share of its wall time is left
#: out of the tree when at least MIN_QUIET others did not
BUSY_SHARE = 0.4
MIN_QUIET = 3


def waited_share(step: Mapping[str, Any]) -> float:
    """The share of a step's wall time its thread waited for a core (0 when unknown).

    Example:
        >>> waited_share({"wall_ms": 10.0, "cpu_wait_ms": 6.0}), waited_share({"wall_ms": 1.0})
        (0.6, 0.0)
    """
    wall = float(step.get("wall_ms") or 0.0)
    wait = step.get("cpu_wait_ms")
    return float(wait) / wall if isinstance(wait, (int, float)) and wall > 0 else 0.0


def build_tree(
    steps: Sequence[dict[str, Any]],
    *,
    parent: Sequence[int],
    path: Sequence[str],
    name: Sequence[str],
    kind: Sequence[str],
    type_name: Sequence[str | None],
    source: Sequence[Any],
    root_name: str = "step",
    memory_step: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The tree (root = the step) from per-step summaries and the node registry.

    Example:
        >>> steps = [{"wall_ms": w, "forward": {1: f, 2: 1.0}, "backward": {1: 2.0}, "calls": {1: 1, 2: 1},
        ...           "activation": None, "identical": {}, "phases": {}} for w, f in ((5.0, 2.0), (7.0, 4.0))]
        >>> tree = build_tree(steps, parent=[-1, 0, 1], path=["", "enc", "enc.fc"],
        ...                   name=["step", "enc", "fc"], kind=["root", "module", "module"],
        ...                   type_name=[None, "Encoder", "Linear"], source=[None] * 3)
        >>> enc = tree["children"][0]  # 2 and 4 ms forward (1 of them fc's), 2 ms backward
        >>> enc["total_ms"]["mean"], enc["forward_self_ms"]["mean"], [c["name"] for c in enc["children"]]
        (5.0, 2.0, ['fc', '(self)'])
    """
    seen = {0}
    for s in steps:
        seen.update(s["forward"])
        seen.update(s["backward"])
        seen.update(s["calls"])
    for node in list(seen):  # keep ancestors of every seen node
        up = parent[node]
        while up > 0 and up not in seen:
            seen.add(up)
            up = parent[up]
    children: dict[int, list[int]] = {}
    for node in sorted(seen):
        if node:
            children.setdefault(max(parent[node], 0), []).append(node)

    activation = (memory_step or {}).get("activation")
    inclusive_bytes: dict[int, int] = {}
    if activation is not None:
        for node in sorted(seen, reverse=True):
            inclusive_bytes[node] = inclusive_bytes.get(node, 0) + activation.get(node, 0)
            if node:
                up = max(parent[node], 0)
                inclusive_bytes[up] = inclusive_bytes.get(up, 0) + inclusive_bytes[node]

    def series(node: int, field: str) -> list[float]:
        if node == 0:
            key = "forward" if field == "forward" else "backward"
            return [s["phases"].get(key, 0.0) for s in steps]
        return [s[field].get(node, 0.0) for s in steps]

    def total(node: int) -> list[float]:
        if node == 0:
            return [s["wall_ms"] for s in steps]
        f, b = series(node, "forward"), series(node, "backward")
        return [x + y for x, y in zip(f, b)]

    def make(node: int) -> dict[str, Any]:
        kids = children.get(node, [])
        fwd, bwd, tot = series(node, "forward"), series(node, "backward"), total(node)
        # The root's forward/backward are the step's phases: its self time is the part of
        # those phases no module or region claimed (e.g. the backward of functional losses).
        fwd_self = [
            max(0.0, v - sum(s["forward"].get(k, 0.0) for k in kids)) for v, s in zip(fwd, steps)
        ]
        bwd_self = [
            max(0.0, v - sum(s["backward"].get(k, 0.0) for k in kids)) for v, s in zip(bwd, steps)
        ]
        out = {
            "path": path[node] if node else "",
            "name": root_name if node == 0 else name[node],
            "kind": kind[node],
            "type": type_name[node],
            "calls_per_step": (
                sum(s["calls"].get(node, 0) for s in steps) / len(steps) if node and steps else 1.0
            ),
            "forward_ms": stat_with_mean(fwd),
            "forward_self_ms": stat_with_mean(fwd_self),
            "backward_ms": stat_with_mean(bwd),
            "backward_self_ms": stat_with_mean(bwd_self),
            "total_ms": stat_with_mean(tot),
            "activation_bytes": inclusive_bytes.get(node) if activation is not None else None,
            "source": source[node],
            "children": [make(k) for k in kids],
        }
        recomputed = [(s.get("recomputed") or {}).get(node, 0.0) for s in steps]
        if node and any(recomputed):  # forward re-run in backward (activation checkpointing):
            out["recomputed_ms"] = stat_with_mean(recomputed)  # part of its backward_ms
        if kids:
            kid_totals = [total(k) for k in kids]
            rest = [max(0.0, t - sum(col)) for t, col in zip(tot, zip(*kid_totals))]
            # At the root, the rest also holds the optimizer, data and other phases: in the
            # (self) entry's total, not in its forward or backward columns.
            out["children"].append(_self_node(out["path"], rest, fwd_self, bwd_self))
        return out

    return make(0)


def parameter_count(state: Sequence[Any]) -> int:
    """Elements of the parameters among a module's state (its parameters and buffers).

    Example:
        >>> import torch
        >>> conv = torch.nn.Conv2d(1, 4, 3)
        >>> parameter_count((*conv.parameters(), *conv.buffers()))
        40
    """
    from torch.nn import Parameter  # (torch is imported by then: the state holds its tensors)

    return sum(int(t.numel()) for t in state if isinstance(t, Parameter))


def attach_module_facts(
    tree: Mapping[str, Any], by_path: Mapping[str, Mapping[str, Any]]
) -> None:
    """Put what was read once per module (``params``, its parameter count; ``conv``, a
    convolution's geometry) on its module nodes, by path (a module reused from two callers has
    a node under each).

    Example:
        >>> tree = {"path": "", "children": [{"path": "conv", "kind": "module", "children": []}]}
        >>> attach_module_facts(tree, {"conv": {"params": 40, "conv": {"padding_share": 0.9}}})
        >>> tree["children"][0]["params"], tree["children"][0]["conv"]
        (40, {'padding_share': 0.9})
    """
    stack = [tree]
    while stack:
        node = stack.pop()
        if node.get("kind") == "module":
            node.update(by_path.get(str(node.get("path") or "")) or {})  # type: ignore[attr-defined]
        stack.extend(node.get("children") or ())


def _self_node(
    parent_path: str, rest: list[float], fwd: list[float], bwd: list[float] | None
) -> dict[str, Any]:
    zero = [0.0] * len(rest)
    return {
        "path": f"{parent_path}.(self)" if parent_path else "(self)",
        "name": "(self)",
        "kind": "self",
        "type": None,
        "calls_per_step": 0.0,
        "forward_ms": stat_with_mean(fwd),
        "forward_self_ms": stat_with_mean(fwd),
        "backward_ms": stat_with_mean(bwd if bwd is not None else zero),
        "backward_self_ms": stat_with_mean(bwd if bwd is not None else zero),
        "total_ms": stat_with_mean(rest),
        "activation_bytes": None,
        "source": None,
        "children": [],
    }


def recomputation(
    tree: dict[str, Any],
    steps: Sequence[dict[str, Any]],
    paths: Sequence[str],
    call_sites: Mapping[int, tuple[str, int, str]] | None = None,
    repeat_sites: Mapping[int, tuple[str, int, str]] | None = None,
) -> list[dict[str, Any]]:
    """Modules called more than once per step with inputs identical to an earlier call.

    ``call_sites`` (node -> (file, line, function) of the code that calls the module) gives
    each record a ``call_site``: the line to hoist out of the loop; ``repeat_sites`` (the same,
    of the first call that repeated an earlier one) a ``repeat_site`` when that is another line
    (an evaluation that runs the model again on the same inputs: the call to drop).

    Example:
        >>> steps = [{"wall_ms": 4.0, "forward": {1: 3.0}, "backward": {}, "calls": {1: 3},
        ...           "activation": None, "identical": {1: 2}, "phases": {}}]
        >>> tree = build_tree(steps, parent=[-1, 0], path=["", "enc"], name=["step", "enc"],
        ...                   kind=["root", "module"], type_name=[None, "Encoder"], source=[None, None])
        >>> [(r["path"], r["calls_per_step"], r["identical_input_calls"], r["time_per_call_ms"])
        ...  for r in recomputation(tree, steps, ["", "enc"])]
        [('enc', 3.0, 2.0, 1.0)]
    """
    totals: dict[str, float] = {}
    sites: dict[str, dict[str, Any]] = {}
    repeats: dict[str, dict[str, Any]] = {}
    steps = [s for s in steps if s.get("fingerprinted", True)]  # inputs compared there
    for s in steps:
        for node, count in s["identical"].items():
            totals[paths[node]] = totals.get(paths[node], 0.0) + count
            for known, found in ((sites, call_sites), (repeats, repeat_sites)):
                site = (found or {}).get(node)
                if site is not None and paths[node] not in known:
                    file, line, function = site
                    code = linecache.getline(file, line).strip() if line else ""
                    known[paths[node]] = {"file": file, "line": line, "function": function,
                                          "code": code}  # fmt: skip
    if not totals or not steps:
        return []
    by_path: dict[str, list[dict[str, Any]]] = {}

    def walk(node: dict[str, Any]) -> None:
        by_path.setdefault(node["path"], []).append(node)
        for child in node["children"]:
            walk(child)

    walk(tree)
    out = []
    for p, count in totals.items():
        nodes = by_path.get(p, [])
        calls = sum(n["calls_per_step"] for n in nodes)
        forward = sum(n["forward_ms"]["mean"] for n in nodes)
        backward = sum(float((n.get("backward_ms") or {}).get("mean") or 0.0) for n in nodes)
        out.append(
            {
                "path": p,
                "calls_per_step": calls,
                "identical_input_calls": count / len(steps),
                "time_per_call_ms": forward / calls if calls else 0.0,
                "backward_per_call_ms": backward / calls if calls else 0.0,
                "source": nodes[0]["source"] if nodes else None,
                "call_site": sites.get(p),
            }
        )
        repeat = repeats.get(p)
        if repeat is not None and repeat != sites.get(p):
            out[-1]["repeat_site"] = repeat
    out.sort(key=lambda r: -r["identical_input_calls"] * r["time_per_call_ms"])
    return out
