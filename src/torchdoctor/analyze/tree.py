"""Tree processors: pure functions that take a Session tree node and return a new one.

Like pyinstrument's processors: each does one transformation and never mutates its input.

- :func:`group_repeated_siblings` folds runs of numbered siblings of the same type
  (``decoder.layers.0`` ... ``decoder.layers.11``) into one ``group`` node
  ``decoder.layers[0-11]`` whose children merge the members' children by name;
- :func:`with_percentages` adds ``pct_of_parent`` and ``pct_of_step`` (from the additive means);
- :func:`check_invariants` lists every place where the tree does not add up.

Reading helpers (the typical value of a Stat, tree walking) come from
:mod:`torchdoctor.session_read`.

Example:
    >>> def leaf(path, ms):
    ...     s = {"median": ms, "min": ms, "max": ms, "q1": ms, "q3": ms, "mean": ms}
    ...     return {"path": path, "name": path.rsplit(".", 1)[-1], "kind": "module",
    ...             "type": "Layer", "calls_per_step": 1.0, "forward_ms": s,
    ...             "forward_self_ms": s, "backward_ms": s, "backward_self_ms": s,
    ...             "total_ms": s, "activation_bytes": 0, "source": None, "children": []}
    >>> parent = leaf("layers", 9.0)
    >>> parent["children"] = [leaf("layers.0", 4.0), leaf("layers.1", 4.0)]
    >>> grouped = group_repeated_siblings(parent)
    >>> [(c["name"], c["group_count"]) for c in grouped["children"]]
    [('layers[0-1]', 2)]
"""

from __future__ import annotations

import copy
import re
from typing import Any

from torchdoctor.session_read import center, walk

STAT_FIELDS = (
    "forward_ms",
    "forward_self_ms",
    "backward_ms",
    "backward_self_ms",
    "total_ms",
)
_INDEXED = re.compile(r"^(?P<prefix>.*?)(?P<index>\d+)$")


def _sum_stats(stats: list[dict[str, float]]) -> dict[str, float]:
    keys = set().union(*(s.keys() for s in stats)) if stats else set()
    return {k: sum(float(s.get(k, 0.0)) for s in stats) for k in sorted(keys)}


def merge_nodes(nodes: list[dict[str, Any]], *, path: str, name: str) -> dict[str, Any]:
    """One node summing ``nodes`` (Stats added key by key: exact for the mean, an upper bound
    for the median and quartiles); children merged by name, in first-seen order.

    Example:
        >>> a = {"name": "x", "kind": "module", "calls_per_step": 1.0, "children": []}
        >>> merge_nodes([a, dict(a)], path="g", name="g")["calls_per_step"]
        2.0
    """
    first = nodes[0]
    merged: dict[str, Any] = {
        "path": path,
        "name": name,
        "kind": first.get("kind"),
        "type": first.get("type"),
        "calls_per_step": sum(float(n.get("calls_per_step") or 0.0) for n in nodes),
        "source": first.get("source"),
    }
    for field in STAT_FIELDS:
        if any(field in n for n in nodes):
            merged[field] = _sum_stats([n.get(field) or {} for n in nodes])
    sizes = [n.get("activation_bytes") for n in nodes]
    merged["activation_bytes"] = (
        None if all(s is None for s in sizes) else sum(s or 0 for s in sizes)
    )
    # children keyed by their path below their member: an item of a list the tree leaves out
    # (T5Block's `layer.0`, its ModuleList never called) keeps the list's name
    by_name: dict[str, list[dict[str, Any]]] = {}
    for n in nodes:
        for child in n.get("children") or []:
            by_name.setdefault(_below(child, n), []).append(child)
    merged["children"] = [
        merge_nodes(group, path=f"{path}.{below}", name=str(group[0].get("name") or below))
        for below, group in by_name.items()
    ]
    if first.get("kind") == "group":  # a group inside each member of an outer group
        count = int(first.get("group_count") or 1)
        merged["group_count"] = count
        merged["group_paths"] = list(first.get("group_paths") or ())
        merged["per_item_ms"] = center(merged.get("total_ms")) / (count * len(nodes))
    return merged


def _below(child: dict[str, Any], parent: dict[str, Any]) -> str:
    """``child``'s path below ``parent``'s (``layer.0`` for ``block.3.layer.0`` under
    ``block.3``), else its name.

    Example:
        >>> _below({"name": "0", "path": "block.3.layer.0"}, {"path": "block.3"})
        'layer.0'
        >>> _below({"name": "(self)", "path": "x"}, {"path": "block.3"})
        '(self)'
    """
    path, above = str(child.get("path") or ""), str(parent.get("path") or "")
    if above and path.startswith(above + "."):
        return path[len(above) + 1 :]
    return str(child.get("name") or path.rsplit(".", 1)[-1])


def group_repeated_siblings(node: dict[str, Any], min_count: int = 2) -> dict[str, Any]:
    """Fold runs of consecutively numbered siblings of one type into ``group`` nodes.

    Siblings numbered as list items (``layers.0``, ``layers.1``) fold when of one type;
    attributes numbered by hand (``res1`` .. ``res5``) also need one parameter count (``params``).
    A group node has ``kind`` "group", ``path`` like ``decoder.layers[0-11]``, ``group_count``,
    ``group_paths`` (the members) and ``per_item_ms`` (mean total per member).

    Example:
        >>> layer = lambda i: {"path": f"layers.{i}", "name": str(i), "kind": "module",
        ...                    "type": "Block", "total_ms": {"mean": 2.0}, "children": []}
        >>> tree = {"path": "", "name": "step", "children": [layer(0), layer(1), layer(2)]}
        >>> group = group_repeated_siblings(tree)["children"][0]
        >>> group["path"], group["group_count"], group["per_item_ms"]
        ('layers[0-2]', 3, 2.0)
        >>> res = lambda i, params: {"path": f"res{i}", "name": f"res{i}", "kind": "module",
        ...     "type": "ResidualBlock", "params": params, "total_ms": {"mean": 2.0}, "children": []}
        >>> tree = {"path": "", "children": [res(1, 10), res(2, 10), res(3, 10), res(4, 99)]}
        >>> [c["path"] for c in group_repeated_siblings(tree)["children"]]
        ['res[1-3]', 'res4']
        >>> copy = lambda i: {**res(1, 10), "path": f"fast#{i}", "name": f"fast#{i}"}  # (made
        >>> [c["path"] for c in group_repeated_siblings({"path": "", "children": [  # anew: gaps)
        ...     copy(11), copy(12), copy(19), copy(20)]})["children"]]
        ['fast#[11-20]']
    """
    out = {k: v for k, v in node.items() if k != "children"}
    children = _anew_together([group_repeated_siblings(c, min_count)
                               for c in node.get("children") or []])  # fmt: skip
    result: list[dict[str, Any]] = []
    index = 0
    while index < len(children):
        run = _run_from(children, index)
        if len(run) >= min_count:
            members = [children[i] for i in run]
            first, last = members[0], members[-1]
            prefix = _INDEXED.match(first["path"]).group("prefix")  # type: ignore[union-attr]
            low = _INDEXED.match(first["path"]).group("index")  # type: ignore[union-attr]
            high = _INDEXED.match(last["path"]).group("index")  # type: ignore[union-attr]
            stem = prefix[:-1] if prefix.endswith(".") else prefix
            label = f"{stem}[{low}-{high}]"
            group = merge_nodes(members, path=label, name=label.rsplit(".", 1)[-1])
            group["kind"] = "group"
            group["group_count"] = len(members)
            group["group_paths"] = [m["path"] for m in members]
            group["per_item_ms"] = center(group.get("total_ms")) / len(members)
            if prefix.endswith("#"):  # (one variable's models made anew, collect/naming.py:
                group["made_anew"] = True  # their calls a step, all copies')
            else:
                group["calls_per_step"] = group["calls_per_step"] / len(members)
            result.append(group)
            index = run[-1] + 1
        else:
            result.append(children[index])
            index += 1
    out["children"] = result
    return out


def _anew_together(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``children`` with each variable's models made anew (``fast#4``, ``fast#7``: a per-task
    copy each step) moved up to the first of them, of one type: the detailed steps' copies
    fold into one row even where another module ran between them (the base model's call).

    Example:
        >>> rows = [{"path": p, "type": "Net"} for p in ("fast#4", "net", "fast#9")]
        >>> [r["path"] for r in _anew_together(rows)]
        ['fast#4', 'fast#9', 'net']
    """
    families: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    order: list[Any] = []
    for child in children:
        match = _INDEXED.match(str(child.get("path", "")))
        if match is not None and match.group("prefix").endswith("#"):
            key = (match.group("prefix"), child.get("type"))
            if key not in families:
                families[key] = []
                order.append(key)
            families[key].append(child)
        else:
            order.append(child)
    return [c for item in order for c in (families[item] if isinstance(item, tuple) else [item])]


def _run_from(children: list[dict[str, Any]], start: int) -> list[int]:
    first = children[start]
    match = _INDEXED.match(str(first.get("path", "")))
    if first.get("kind") != "module" or match is None:
        return [start]
    prefix, number = match.group("prefix"), int(match.group("index"))
    # `layers.0`, `layers.1`: list items; `res1` .. `res5` (attributes numbered by hand) only
    # when each holds as many parameters (`conv1` .. `conv4` of four shapes stay apart)
    by_attribute = bool(prefix) and not prefix.endswith(".")
    if by_attribute and not isinstance(first.get("params"), int):
        return [start]
    # `fast#11`, `fast#12`, `fast#19`: one variable's models in turn (collect/naming.py), made
    # anew each step (a per-task copy), the detailed steps' ones: numbers with gaps
    anew = prefix.endswith("#")
    run, last = [start], number
    for i in range(start + 1, len(children)):
        other = children[i]
        m = _INDEXED.match(str(other.get("path", "")))
        if (
            m is None
            or other.get("kind") != "module"
            or m.group("prefix") != prefix
            or (int(m.group("index")) <= last if anew else int(m.group("index")) != last + 1)
            or other.get("type") != first.get("type")
            or (by_attribute and other.get("params") != first.get("params"))
        ):
            break
        run.append(i)
        last = int(m.group("index"))
    return run


def with_percentages(tree: dict[str, Any], step_ms: float | None = None) -> dict[str, Any]:
    """A copy of the tree with ``pct_of_parent`` and ``pct_of_step`` on every node.

    Example:
        >>> t = {"total_ms": {"mean": 10.0}, "children": [{"total_ms": {"mean": 4.0}}]}
        >>> with_percentages(t)["children"][0]["pct_of_step"]
        40.0
    """
    step = step_ms if step_ms is not None else center(tree.get("total_ms"))

    def visit(node: dict[str, Any], parent_ms: float | None) -> dict[str, Any]:
        out = {k: v for k, v in node.items() if k != "children"}
        value = center(node.get("total_ms"))
        out["pct_of_parent"] = 100.0 * value / parent_ms if parent_ms else 100.0
        out["pct_of_step"] = 100.0 * value / step if step else 0.0
        out["children"] = [visit(c, value) for c in node.get("children") or []]
        return out

    return visit(copy.deepcopy(tree), None)


def check_invariants(
    tree: dict[str, Any], *, step_ms: float | None = None, tolerance: float = 0.02
) -> list[str]:
    """Where the tree does not add up: empty when children (``(self)`` included) never exceed
    their parent (total, and below the root forward and backward means, within ``tolerance``
    relative), no value is negative, and the root's children add up to the step within
    ``tolerance``.

    Example:
        >>> bad = {"path": "", "total_ms": {"mean": 1.0},
        ...        "children": [{"path": "a", "total_ms": {"mean": 7.24}, "children": []}]}
        >>> check_invariants(bad)[0].startswith("children of")
        True
    """
    problems: list[str] = []
    for node, _ in walk(tree):
        children = node.get("children") or []
        for field in STAT_FIELDS:
            for key, value in (node.get(field) or {}).items():
                if value < 0:
                    problems.append(f"{node.get('path')!r}: {field}.{key} is negative ({value})")
        if not children:
            continue
        # the root's forward/backward are the phases, which top-level regions may lie outside
        fields = ("total_ms",) if node is tree else ("total_ms", "forward_ms", "backward_ms")
        for field in fields:
            if field not in node:
                continue
            parent = center(node.get(field))
            total = sum(center(c.get(field)) for c in children)
            if total > parent * (1 + tolerance) + 1e-6:
                problems.append(
                    f"children of {node.get('path')!r} add up to {total:.4g} ms {field}, "
                    f"more than the parent's {parent:.4g} ms"
                )
    step = step_ms if step_ms is not None else center(tree.get("total_ms"))
    top = sum(center(c.get("total_ms")) for c in tree.get("children") or [])
    if tree.get("children") and step and abs(top - step) > tolerance * step:
        problems.append(f"top-level entries add up to {top:.4g} ms, the step is {step:.4g} ms")
    return problems
