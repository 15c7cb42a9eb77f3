"""Backward time for regions: find each region's autograd nodes when ``backward()`` starts.

A module call shows the profiler its inputs and outputs; a ``with torchdoctor.region(...)``
block does not. Instead, a region entered in forward with grad enabled records the autograd
sequence numbers at its enter and exit (``torch._C._autograd._get_sequence_nr``, a thread-local
counter every new graph node takes a number from: about 0.05 us, nothing per op). The nodes
numbered in ``[enter, exit)`` were created inside the region (by its own ops, composite ops'
inner nodes, and modules called in it).

When ``torch.autograd.backward``/``grad`` starts, :func:`region_boundaries` walks the graph from
its roots, descending only into nodes numbered at or after the first pending region's enter
(what ran before every region, e.g. the model's forward, is not walked). Along each edge
``consumer -> node``: the node is an *output* of every region containing it but not its
consumer (a pre-hook on it marks that region's backward start, as for a module's outputs), and
an *input* of every region containing the consumer but not the node (its pre-hook marks the end:
the input's gradient is complete). Regions nest (their number ranges are nested or disjoint).
Parameters used directly in a region (``AccumulateGrad`` nodes, which outlive the graph) are not
hooked; such a region ends by the rule for calls without an end mark (``collect/backward.py``).
Cost: about 1-2 us per node walked, once per backward call, only in steps with such regions.

Example:
    >>> import torch
    >>> x = torch.randn(3, requires_grad=True)
    >>> h = x * 2
    >>> enter = sequence_nr()
    >>> y = h.exp().sum()
    >>> out = region_boundaries([(enter, sequence_nr(), 7)], roots_of(y))
    >>> [type(n).__name__ for n in out[7][0]], [type(n).__name__ for n in out[7][1]]
    (['SumBackward0'], ['MulBackward0'])
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import torch

sequence_nr = torch._C._autograd._get_sequence_nr
_LEAF_SEQ = 1 << 62  # AccumulateGrad nodes are numbered UINT64_MAX


def roots_of(value: Any) -> list[Any]:
    """The graph nodes a ``backward``/``grad`` call starts from (tensors' ``grad_fn``).

    Example:
        >>> x = torch.ones(2, requires_grad=True)
        >>> [type(node).__name__ for node in roots_of((x * 2).sum())]
        ['SumBackward0']
        >>> roots_of(x)  # a leaf has no grad_fn
        []
    """
    if isinstance(value, torch.Tensor):
        value = (value,)
    elif not isinstance(value, (tuple, list)):
        value = (value,)
    out = []
    for item in value:
        fn = getattr(item, "grad_fn", None) if isinstance(item, torch.Tensor) else None
        if fn is None:
            fn = getattr(item, "node", None)  # a GradientEdge
        if fn is not None:
            out.append(fn)
    return out


def region_boundaries(
    calls: Sequence[tuple[int, int, Any]], roots: Sequence[Any]
) -> dict[Any, tuple[list[Any], list[Any]]]:
    """Per region call key: (output nodes, input nodes) in the graph reachable from ``roots``.

    ``calls`` are ``(enter, exit, key)`` sequence-number ranges (nested or disjoint); calls the
    graph does not reach are absent from the result.

    Example:
        >>> region_boundaries([], roots=[])
        {}
    """
    ordered = sorted((c for c in calls if c[1] > c[0]), key=lambda c: (c[0], -c[1]))
    if not ordered:
        return {}
    enters = [c[0] for c in ordered]
    exits = [c[1] for c in ordered]
    up: list[int] = []
    open_: list[int] = []
    for index, enter in enumerate(enters):
        while open_ and exits[open_[-1]] <= enter:
            open_.pop()
        up.append(open_[-1] if open_ else -1)
        open_.append(index)
    low = enters[0]

    def innermost(seq: int) -> int:
        if seq < low or seq >= _LEAF_SEQ:
            return -1
        i = bisect.bisect_right(enters, seq) - 1
        while i >= 0 and seq >= exits[i]:
            i = up[i]
        return i

    def chain(i: int) -> list[int]:
        out = []
        while i >= 0:
            out.append(i)
            i = up[i]
        return out

    outputs: dict[int, dict[Any, None]] = {}
    inputs: dict[int, dict[Any, None]] = {}

    def edge(ci: int, fn: Any, cn: int, leaf: bool) -> None:
        inner = chain(cn)
        outer = chain(ci)
        for j in inner:
            if j not in outer:
                outputs.setdefault(j, {})[fn] = None
        if not leaf:
            for j in outer:
                if j not in inner:
                    inputs.setdefault(j, {})[fn] = None

    leaf = [True] * len(ordered)  # calls without nested calls: the fast path below
    for parent in up:
        if parent >= 0:
            leaf[parent] = False
    stack: list[tuple[Any, int]] = []
    seen: set[Any] = set()
    for fn in roots:
        seq = fn._sequence_nr()
        cn = innermost(seq)
        if cn >= 0:
            edge(-1, fn, cn, False)
        if low <= seq < _LEAF_SEQ and fn not in seen:
            seen.add(fn)
            stack.append((fn, cn))
    pop, push, add = stack.pop, stack.append, seen.add
    while stack:
        fn, ci = pop()
        if ci >= 0 and leaf[ci]:
            lo, hi = enters[ci], exits[ci]
        else:
            lo = hi = 0
        for nxt, _ in fn.next_functions:
            if nxt is None:
                continue
            seq = nxt._sequence_nr()
            cn = ci if lo <= seq < hi else innermost(seq)
            if cn != ci:
                edge(ci, nxt, cn, seq >= _LEAF_SEQ)
            if low <= seq < _LEAF_SEQ and nxt not in seen:
                add(nxt)
                push((nxt, cn))
    return {ordered[j][2]: (list(nodes), list(inputs.get(j, {}))) for j, nodes in outputs.items()}
