"""Rule ``backward-heavy``: a component whose backward takes far longer than its forward (seed 000).

A layer's backward normally costs about twice its forward. Much more means autograd is
differentiating something expensive it need not: explicit inverses, per-element Python loops,
selection or matching code that should be detached. The saving assumes the remedy brings the
component back to the typical ratio: ``backward - 2 x forward``. Stock ``torch.nn`` layers
(Linear, Sequential, ...) and modules of installed packages (a Hugging Face GPT2Block) are
skipped, and subtracted from their parent: the remedy is about user code, and there is none to
change in them.

Example:
    >>> backward_heavy({"tree": None})
    []
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    TYPICAL_BACKWARD_FORWARD_RATIO,
    Advice,
    location,
    pct,
)
from torchdoctor.session_read import center, fmt_ms, installed_package, tree_step_ms, walk

#: backward / forward at or above this is "far above"
RATIO = 4.0
#: the component's backward must be at least this share of the step to matter
MIN_FRACTION = 0.10
#: how the saving is assumed (an entry merged under a line's cure drops it)
RATIO_NOTE = (
    f"a layer's backward is typically ~{TYPICAL_BACKWARD_FORWARD_RATIO:g}x its forward; the "
    "saving assumes that ratio is reached"
)
#: the measured lines named as a component's backward's cause hold this share of the lines'
#: backward inside it, and LINES_FLOOR of the component's own
LINES_SHARE = 0.5
LINES_FLOOR = 0.25


def backward_lines(session: Mapping[str, Any], path: str, backward: float) -> list[tuple[str, float]]:
    """The measured source lines inside the component at ``path`` (hot-line records owned by it
    or its parts) whose backward, heaviest first, makes up :data:`LINES_SHARE` of the lines'
    backward there and :data:`LINES_FLOOR` of the component's ``backward`` (at most three
    lines), as ``(file:line, backward ms)``; [] when they do not.

    Example:
        >>> rows = [{"file": "/m/mamba.py", "line": 318, "owner": "layers.0.mixer",
        ...          "backward_ms": {"median": 126.0}}]
        >>> backward_lines({"hot_lines": {"lines": rows}}, "layers.0", 194.0)
        [('/m/mamba.py:318', 126.0)]
    """
    per_line: dict[str, float] = {}
    for row in (session.get("hot_lines") or {}).get("lines") or ():
        owner = str(row.get("owner") or "")
        if path and owner != path and not owner.startswith(path + "."):
            continue
        where = location(str(row.get("file")), int(row.get("line") or 0))
        per_line[where] = per_line.get(where, 0.0) + center(row.get("backward_ms"))
    measured = sum(per_line.values())
    named: list[tuple[str, float]] = []
    for where, ms in sorted(per_line.items(), key=lambda kv: -kv[1])[:3]:
        if ms <= 0:
            break
        named.append((where, ms))
        held = sum(m for _, m in named)
        # (the lines' backward leaves out what autograd does between graph nodes, such as
        # summing the gradients a tensor gets from many uses: a share of the lines' own
        # backward, and a fair part of the component's)
        if held >= LINES_SHARE * measured and held >= LINES_FLOOR * backward:
            return named
    return []


def is_library_module(node: Mapping[str, Any]) -> bool:
    """A module whose class is defined in an installed package (transformers' GPT2Block, a
    timm block): its user has no code in it to detach, like a stock layer.

    Example:
        >>> is_library_module({"kind": "module", "source": {"file": "/v/site-packages/x/m.py"}})
        True
    """
    source = node.get("source") or {}
    return node.get("kind") == "module" and installed_package(source.get("file")) is not None


def is_builtin_layer(type_name: str | None) -> bool:
    """Whether a node's type is a stock ``torch.nn`` class (Linear, Sequential, ReLU ...).

    Example:
        >>> is_builtin_layer("Linear"), is_builtin_layer("PaCLoss"), is_builtin_layer(None)
        (True, False, False)
    """
    if not type_name:
        return False
    import torch.nn

    candidate = getattr(torch.nn, type_name, None)
    return isinstance(candidate, type) and issubclass(candidate, torch.nn.Module)


def own_times(node: Mapping[str, Any]) -> tuple[float, float]:
    """Forward and backward of a node minus its stock-layer children (the user code's part).

    Example:
        >>> lin = {"kind": "module", "type": "Linear", "forward_ms": {"median": 1.0},
        ...        "backward_ms": {"median": 2.0}}
        >>> own_times({"forward_ms": {"median": 3.0}, "backward_ms": {"median": 9.0},
        ...            "children": [lin]})
        (2.0, 7.0)
    """
    forward = center(node.get("forward_ms"))
    backward = center(node.get("backward_ms"))
    for child in node.get("children") or ():
        if child.get("kind") == "module" and (
            is_builtin_layer(child.get("type")) or is_library_module(child)
        ):
            forward -= center(child.get("forward_ms"))
            backward -= center(child.get("backward_ms"))
    return max(forward, 0.0), max(backward, 0.0)


def _flagged(node: Mapping[str, Any], step: float) -> bool:
    if node.get("kind") not in ("module", "region"):
        return False
    if node.get("kind") == "module" and (
        is_builtin_layer(node.get("type")) or is_library_module(node)
    ):
        # stock and installed libraries' layers have nothing of the user's to detach (an
        # extreme ratio there is their kernels' own backward, or attribution noise)
        return False
    forward, backward = own_times(node)
    return forward > 0 and backward >= RATIO * forward and backward >= MIN_FRACTION * step


def backward_heavy(session: Mapping[str, Any]) -> list[Advice]:
    """Advice for the leaf-most components whose backward is >= 4x their forward.

    Example:
        >>> node = {"kind": "module", "path": "loss", "forward_ms": {"median": 1.0},
        ...         "backward_ms": {"median": 8.0}, "children": []}
        >>> tree = {"kind": "root", "path": "", "children": [node]}
        >>> backward_heavy({"tree": tree, "step_ms": {"median": 10.0}})[0].estimated_saving_ms
        6.0
    """
    step = tree_step_ms(session)
    tree = session.get("tree")
    if not tree or step <= 0:
        return []
    flagged = [n for n, _ in walk(tree) if _flagged(n, step)]
    # keep the leaf-most: drop a node when one of its descendants is flagged too
    ids = {id(n) for n in flagged}
    leaf_most = [n for n in flagged if not any(id(d) in ids for d, k in walk(n) if k > 0)]
    advice = []
    for node in leaf_most:
        forward, backward = own_times(node)
        saving = backward - TYPICAL_BACKWARD_FORWARD_RATIO * forward
        path = node.get("path") or node.get("name") or "?"
        lines = backward_lines(session, str(node.get("path") or ""), backward)
        advice.append(
            Advice(
                rule="backward-heavy",
                title=f"Backward of {path} is {backward / forward:.0f}x its forward: "
                "stop differentiating what need not be",
                estimated_saving_ms=saving,
                saving_range_ms=[saving, saving],
                confidence="medium",
                evidence=[
                    f"{path}: forward {fmt_ms(forward)}, backward {fmt_ms(backward)} "
                    f"({pct(backward, step):.0f}% of the step), stock torch.nn and library children "
                    "excluded",
                    RATIO_NOTE,
                ],
                fix="Detach selection/matching/index computations (torch.no_grad or .detach()); "
                "replace explicit inverses with Cholesky solves or whitening "
                "(torchdoctor.ops); replace per-element Python loops with batched ops; "
                "checkpointing does not help here (it adds forward work).",
                references=["torchdoctor.ops", "seed 000"],
                heat=min(1.0, backward / step),
                # (advice on those lines merges with this: one cause)
                locations=[where for where, _ in lines],
            )
        )
        if lines:
            advice[-1].evidence.insert(1, "most of its backward is on the line(s) " + ", ".join(
                f"{where.rsplit('/', 1)[-1]} ({fmt_ms(ms)})" for where, ms in lines))
    return advice
