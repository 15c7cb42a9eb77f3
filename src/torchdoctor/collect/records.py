"""The recorder's raw events as named records (clock tokens until a step is resolved).

- :class:`Frame`: a module or region call open on the recorder's stack;
- :class:`ForwardCall`: a finished forward (or region) call, or a *piece* of a region call
  that a backward pass run inside it cut in two (a piece adds time, not a call);
- :class:`BackwardMark`: an autograd hook fired for a call (its backward started or ended),
  or a backward pass returned (:attr:`MarkKind.PASS_END`, node 0);
- :func:`resolve_records`: a step's raw records, detached by the recorder, in nanoseconds.

Plain ``NamedTuple`` records: built on the hot path, unpacked like tuples by the pure
processing in ``collect/backward.py`` and ``collect/aggregate.py``.

Example:
    >>> mark = BackwardMark(node=3, serial=7, kind=MarkKind.END, t=12.5)
    >>> mark.kind is MarkKind.END, mark.kind == 1
    (True, True)
    >>> ForwardCall(2, 0.0, 1.0).piece
    False
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple

import torch


class MarkKind(IntEnum):
    """What a backward mark says: a call's backward started, ended, or a pass returned.

    Example:
        >>> int(MarkKind.PASS_END)
        2
    """

    START = 0  # an output's gradient of the call is complete
    END = 1  # an input's gradient of the call is complete
    PASS_END = 2  # a backward pass returned: ends calls whose inputs needed no grad
    # DDP launched a gradient bucket's all-reduce: the backward compute is done up to here; the
    # last of a pass ends calls whose inputs needed no grad before the pass's end (the wait for
    # the last bucket is communication, not the first layer's backward)
    COMPUTED = 3


class Frame(NamedTuple):
    """A call open on the recorder's stack; ``module_id`` is None for a region.

    Example:
        >>> Frame(node=1, module_id=None, serial=4, token=0).is_region
        True
    """

    node: int
    module_id: int | None
    serial: int
    token: Any

    @property
    def is_region(self) -> bool:
        return self.module_id is None


class ForwardCall(NamedTuple):
    """A finished forward call of ``node`` (``piece``: part of a region call, not a call).

    Example:
        >>> ForwardCall(1, 10, 30, piece=True).piece
        True
    """

    node: int
    start: Any
    end: Any
    piece: bool = False  # RECOMPUTED: a forward re-run inside backward (activation checkpointing)


#: ``ForwardCall.piece`` of a forward re-run inside a backward pass (activation checkpointing):
#: its time is part of the backward, counted apart as the recomputation's cost
RECOMPUTED = 2


class BackwardMark(NamedTuple):
    """An autograd hook that fired for call ``serial`` of ``node`` at ``t`` (a token or ns).

    Example:
        >>> BackwardMark(0, 0, MarkKind.PASS_END, 5).kind.name
        'PASS_END'
    """

    node: int
    serial: int
    kind: MarkKind
    t: Any


_new = tuple.__new__  # a record without its generated Python __new__ (hot path)
_PASS_END, _COMPUTED = MarkKind.PASS_END, MarkKind.COMPUTED


def resolve_records(clock: Any, raw: tuple) -> tuple[Any, list, list, list]:
    """A step's raw records (:meth:`Recorder.take_step`) in nanoseconds, in one
    ``clock.resolve`` call: ``((start, end), forward, marks, segments)`` with ``forward`` a
    :class:`ForwardCall` per call, ``marks`` a :class:`BackwardMark` per backward mark of this
    step's calls (marks of earlier steps' calls, from kept graphs, dropped), and ``segments``
    ``(t, phase)`` per phase change.

    Example:
        >>> from torchdoctor.collect.clocks import CpuClock
        >>> raw = (0, 90, [ForwardCall(1, 10, 40)], [], [], [(0, "forward")], 1)
        >>> resolve_records(CpuClock(), raw)[:2]
        ((0.0, 90.0), [ForwardCall(node=1, start=10.0, end=40.0, piece=False)])
    """
    start, end, fwd, bwd, fired, phase_segments, first = raw
    tokens = [start, end]
    tokens += [t for call in fwd for t in (call[1], call[2])]
    tokens += [m.t for m in bwd]
    tokens += [t for _, t in fired]
    tokens += [t for t, _ in phase_segments]
    ns = clock.resolve(tokens)
    i = 2
    forward = []
    for call in fwd:
        forward.append(_new(ForwardCall, (call[0], ns[i], ns[i + 1], call[3])))
        i += 2
    marks = []
    for node, serial, kind, _ in bwd:
        if serial >= first or kind is _PASS_END or kind is _COMPUTED:  # drop marks of
            # earlier steps' calls (a pass's marks belong to no call)
            marks.append(_new(BackwardMark, (node, serial, kind, ns[i])))
        i += 1
    for entries, _ in fired:
        t = ns[i]
        marks.extend(_new(BackwardMark, (n, s, k, t)) for n, s, k in entries if s >= first)
        i += 1
    segments = [(ns[i + k], phase) for k, (_, phase) in enumerate(phase_segments)]
    return (ns[0], ns[1]), forward, marks, segments


def fired_entries(rec: Any) -> type[list]:
    """The class of a graph pre-hook's entries for ``rec``: a list of ``(node, serial, kind)``
    that is its own hook (called when the ``grad_fn`` runs: one clock read and one append of
    ``(entries, token)`` to ``rec.fired``; the marks are made when the step is resolved; its cost
    is in the calibrated part of the estimate, outside the hooks' measured time).

    Example:
        >>> class Rec: fired, now = [], staticmethod(lambda: 7)
        >>> entries = fired_entries(Rec)([(1, 2, 0)]); entries(None)
        >>> Rec.fired == [([(1, 2, 0)], 7)]
        True
    """

    def __call__(entries: list, *_: Any) -> None:
        rec.fired.append((entries, rec.now()))

    return type("FiredEntries", (list,), {"__slots__": (), "__call__": __call__})


def tensors_in(value: Any) -> list[torch.Tensor]:
    """Tensors in a forward's inputs or outputs (two levels of tuples, lists and dicts).

    Example:
        >>> t = torch.ones(1)
        >>> len(tensors_in((t, [t, 3], {"a": t}))), tensors_in(3)
        (2, [])
    """
    if isinstance(value, torch.Tensor):
        return [value]
    out: list[torch.Tensor] = []
    items = value.values() if isinstance(value, dict) else value
    if isinstance(value, (tuple, list, dict)):
        for item in items:
            if isinstance(item, torch.Tensor):
                out.append(item)
            elif isinstance(item, (tuple, list)):
                out.extend(x for x in item if isinstance(x, torch.Tensor))
    return out


def first_kwarg_shape(kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    """The shape of the first tensor among keyword arguments (None: no tensor).

    Example:
        >>> first_kwarg_shape({"mask": None, "input_ids": torch.ones(2, 3)})
        (2, 3)
    """
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
    return None
