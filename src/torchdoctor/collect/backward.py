"""Backward time per module from autograd hook timestamps, clipped so the tree adds up.

Choice (measured in ``benchmarks/profiler_overhead.py``, documented in docs/profiler.md): autograd
graph pre-hooks on the ``grad_fn`` of each call's outputs (start: an output's gradient is
complete) and inputs (end: the input's gradient is complete) - the same idea as
``torch.utils.module_tracker``'s ``register_multi_grad_hook`` use, with less bookkeeping (about
3x cheaper to register than tensor hooks) - instead of full backward hooks
(``register_module_full_backward_hook``), which wrap every module's inputs and outputs in extra
autograd nodes and cost several times more on small modules.

Processing one step (all pure):

1. per call: start = earliest start mark, end = latest end mark; a call none of whose inputs
   required grad (the first layer, a module fed with data) has no end mark: it ends when the
   backward of a call made before it in forward starts, or an ancestor's ends, or the backward
   pass returns;
2. bottom-up: a node's span covers its own calls and its children's (a container fed with data
   has no input hook of its own; its backward ends when its first child's ends);
3. top-down: children's intervals are intersected with their parent's and, at each instant,
   the open sibling interval that started last owns the time (:func:`innermost`). The autograd
   engine runs one node at a time: a sibling starting inside another's interval runs its
   nodes, and when it ends the other's resume (a decoder called per token, with a loss module
   called per token nested in the union of its calls); it also guarantees children never add
   up past their parent. A leaf called several times
   (an RNN cell per time step) takes part call by call, not as the union of its calls: the
   backward of sibling cells interleaves (lstm2 at t, lstm1 at t, lstm2 at t-1, ...).

Limits: a module whose outputs do not require grad has no backward (correct: none runs); when
several sibling modules read the same input (q/k/v projections), the input's gradient is ready
only after all of them, and the later sibling's start takes the time over; a
module reused twice in one caller gets the union of its calls' intervals; in-place ops on a
module's output move the hook to the in-place result's gradient, which is still correct order.

Example:
    >>> marks = [BackwardMark(2, 7, MarkKind.START, 10.0), BackwardMark(2, 7, MarkKind.END, 30.0)]
    >>> spans = backward_times(parent=[-1, 0, 1], marks=marks, step=(0.0, 100.0))
    >>> spans[2], spans[1]
    (20.0, 20.0)
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from torchdoctor.collect.records import BackwardMark, MarkKind

Interval = tuple[float, float]
_START, _END, _PASS_END, _COMPUTED = (
    int(k) for k in (MarkKind.START, MarkKind.END, MarkKind.PASS_END, MarkKind.COMPUTED)
)


def merge(intervals: list[Interval]) -> list[Interval]:
    """Union of intervals as a sorted list of disjoint intervals.

    Example:
        >>> merge([(3.0, 4.0), (0.0, 2.0), (1.0, 3.5)])
        [(0.0, 4.0)]
    """
    out: list[Interval] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Intersection of two sorted disjoint interval lists.

    Example:
        >>> intersect([(0.0, 5.0)], [(1.0, 2.0), (4.0, 9.0)])
        [(1.0, 2.0), (4.0, 5.0)]
    """
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start = max(a[i][0], b[j][0])
        end = min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _chain(node: int, parent: Sequence[int]) -> set[int]:
    """``node`` and its ancestors (root 0 excluded).

    Example:
        >>> sorted(_chain(3, [-1, 0, 1, 2]))
        [1, 2, 3]
    """
    chain = set()
    while node > 0:
        chain.add(node)
        node = parent[node]
    return chain


def call_intervals(
    marks: Sequence[BackwardMark], parent: Sequence[int] | None = None
) -> dict[int, list[Interval]]:
    """Per node, the [start, end] of each call from resolved marks (``t`` in ns).

    A mark's ``kind`` is START, END or PASS_END (a backward pass returned; node 0). A call with a start
    but no end (none of its inputs required grad) ends at the next backward start of a call made
    before it in forward (not an ancestor; the backward runs in reverse forward order, so that
    call's backward comes after this one's), the next end of an ancestor, or when the backward
    pass returned, or, under DDP, its last gradient bucket's launch before that (``COMPUTED``:
    what follows is the wait for the all-reduce). Identity modules (``Dropout(0)``,
    ``Identity``) share their input tensor's hooks and so are never taken for the next module.

    Example:
        >>> S, E, PASS_END = MarkKind.START, MarkKind.END, MarkKind.PASS_END
        >>> marks = [BackwardMark(1, 1, S, 10.0), BackwardMark(1, 1, E, 25.0),
        ...          BackwardMark(2, 2, S, 30.0), BackwardMark(0, 0, PASS_END, 50.0)]
        >>> call_intervals(marks, parent=[-1, 0, 0])  # call 2 has no end mark: ends with the pass
        {1: [(10.0, 25.0)], 2: [(30.0, 50.0)]}
    """
    marks = _last_launches(marks)
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    owner: dict[int, int] = {}
    for node, serial, kind, t in marks:
        if kind == _PASS_END or kind == _COMPUTED:
            continue
        owner[serial] = node
        if kind == _START:
            if serial not in starts or t < starts[serial]:
                starts[serial] = t
        elif serial not in ends or t > ends[serial]:
            ends[serial] = t
    ordered: list[tuple[float, int, int, int]] = []
    times: list[float] = []
    out: dict[int, list[Interval]] = {}
    for serial, start in starts.items():
        node = owner[serial]
        end = ends.get(serial)
        if end is None:
            end = start
            if parent is not None:
                if not ordered:  # sorted once, only when some call has no end mark
                    ordered = sorted((t, n, w, s) for n, s, w, t in marks)
                    times = [t for t, *_ in ordered]
                chain = _chain(node, parent)  # the node and its ancestors
                for t, other, kind, other_serial in ordered[bisect.bisect_right(times, start) :]:
                    if kind == _PASS_END or kind == _COMPUTED or (
                        other in chain  # an ancestor's end
                        if kind == _END
                        # the start of a call made earlier in forward, outside this subtree
                        else other_serial < serial and other not in chain
                    ):
                        end = t
                        break
        out.setdefault(node, []).append((start, max(end, start)))
    return out


def _last_launches(marks: Sequence[BackwardMark]) -> Sequence[BackwardMark]:
    """The marks with, of the ``COMPUTED`` marks (DDP bucket launches), only each pass's last:
    earlier buckets launch while the backward still computes.

    Example:
        >>> C, P = MarkKind.COMPUTED, MarkKind.PASS_END
        >>> marks = [BackwardMark(0, 0, C, 5.0), BackwardMark(0, 0, C, 8.0),
        ...          BackwardMark(0, 0, P, 9.0)]
        >>> [m.t for m in _last_launches(marks)]
        [8.0, 9.0]
    """
    if not any(m[2] == _COMPUTED for m in marks):
        return marks
    last: dict[int, Any] = {}  # pass (the PASS_ENDs before it) -> its last launch
    ends = sorted(m[3] for m in marks if m[2] == _PASS_END)
    for m in marks:
        if m[2] == _COMPUTED:
            index = bisect.bisect_left(ends, m[3])
            last[index] = max(last.get(index, m[3]), m[3])
    kept = set(last.values())
    return [m for m in marks if m[2] != _COMPUTED or m[3] in kept]


def backward_intervals(
    parent: Sequence[int], marks: Sequence[BackwardMark], step: Interval
) -> dict[int, list[Interval]]:
    """Per node (root 0 included), its final disjoint backward intervals within the step.

    Example:
        >>> S, E = MarkKind.START, MarkKind.END
        >>> marks = [BackwardMark(1, 1, S, 0.0), BackwardMark(1, 1, E, 40.0),
        ...          BackwardMark(2, 2, S, 20.0), BackwardMark(2, 2, E, 60.0)]
        >>> backward_intervals([-1, 0, 0], marks, (0.0, 100.0))  # siblings: 1 is cut where 2 starts
        {0: [(0.0, 100.0)], 1: [(0.0, 20.0)], 2: [(20.0, 60.0)]}
    """
    own = call_intervals(marks, parent)
    if not own:
        return {}
    # bottom-up: spans cover children (merged at every level, so lists stay short). Nodes are
    # registered after their parents, so descending ids visit children before parents.
    span: dict[int, list[Interval]] = {node: list(v) for node, v in own.items()}
    for node in list(span):
        up = parent[node]
        while up > 0 and up not in span:
            span[up] = []
            up = parent[up]
    calls: dict[int, list[Interval]] = {}  # a leaf's calls, each its own piece (see below)
    for node in sorted(span, reverse=True):
        if len(span[node]) > 1 and node in own and len(span[node]) == len(own[node]):
            calls[node] = sorted(own[node])
        merged = span[node] = merge(span[node]) if len(span[node]) > 1 else span[node]
        up = parent[node]
        if up > 0:
            span[up].extend(merged)
    # walk parents in increasing id (a parent before its children), cutting children.
    children: dict[int, list[int]] = {}
    for node in span:
        children.setdefault(parent[node] if parent[node] > 0 else 0, []).append(node)
    final: dict[int, list[Interval]] = {0: [step]}
    for up in sorted(children):
        allowed = final.get(up)
        if not allowed:
            continue
        pieces: list[tuple[float, float, int]] = []
        single = allowed[0] if len(allowed) == 1 else None
        for child in children[up]:
            # A leaf called many times (an RNN cell per time step) is cut call by call: the
            # backward of sibling calls interleaves (lstm2 at t, lstm1 at t, lstm2 at t-1 ...),
            # and the union of one node's calls would cover the others' time
            intervals = calls.get(child)
            if intervals is not None:  # (they may overlap: each is clipped on its own)
                for call in intervals:
                    pieces.extend((start, end, child) for start, end in intersect([call], allowed))
                continue
            intervals = span[child]
            if single is not None and len(intervals) == 1:  # the common case: clamp
                start, end = max(intervals[0][0], single[0]), min(intervals[0][1], single[1])
                if start < end:
                    pieces.append((start, end, child))
                continue
            for start, end in intersect(intervals, allowed):
                pieces.append((start, end, child))
        for child, owned in innermost(pieces).items():
            final.setdefault(child, []).extend(owned)
    return final


def innermost(pieces: list[tuple[float, float, int]]) -> dict[int, list[Interval]]:
    """Per child, the time it owns among sibling ``(start, end, child)`` pieces: at each instant,
    the open piece that started last (the engine runs one node at a time: a sibling that starts
    inside another's piece runs its nodes, and when it ends the other's resume, as the decoder
    called once per token resumes after each call of the loss module nested in its calls' union).

    Example:
        >>> innermost([(0.0, 40.0, 1), (10.0, 20.0, 2), (30.0, 60.0, 3)])
        {1: [(0.0, 10.0), (20.0, 30.0)], 2: [(10.0, 20.0)], 3: [(30.0, 60.0)]}
    """
    owned: dict[int, list[Interval]] = {}
    stack: list[list] = []  # open pieces, the innermost last: [child, end, owned from]

    def own(child: int, start: float, end: float) -> None:
        spans = owned.setdefault(child, [])
        if end > start:
            if spans and spans[-1][1] == start:  # (one span across a piece nested and ended)
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))

    def advance(t: float) -> None:  # the open pieces own the time up to t, innermost first
        while stack:
            child, end, since = top = stack[-1]
            if end > t:
                own(child, since, t)
                top[2] = max(since, t)
                return
            own(child, since, end)
            stack.pop()
            if stack:
                stack[-1][2] = max(stack[-1][2], end)

    for start, end, child in sorted(pieces):
        advance(start)
        owned.setdefault(child, [])
        stack.append([child, end, start])
    advance(float("inf"))
    return owned


def backward_times(
    parent: Sequence[int], marks: Sequence[BackwardMark], step: Interval
) -> dict[int, float]:
    """Per node, inclusive backward time (same unit as the marks), children within parents.

    Example:
        >>> S, E = MarkKind.START, MarkKind.END
        >>> marks = [BackwardMark(1, 1, S, 5.0), BackwardMark(1, 1, E, 40.0),
        ...          BackwardMark(2, 2, S, 10.0), BackwardMark(2, 2, E, 30.0)]
        >>> backward_times([-1, 0, 1], marks, (0.0, 100.0))  # node 2 inside node 1
        {1: 35.0, 2: 20.0}
    """
    finals = backward_intervals(parent, marks, step)
    return {node: sum(e - s for s, e in v) for node, v in finals.items() if node != 0}
