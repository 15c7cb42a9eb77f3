"""The recorder's raw events as named records (clock tokens until a step is resolved).

- :class:`Frame`: a module or region call open on the recorder's stack;
- :class:`ForwardCall`: a finished forward (or region) call, or a *piece* of a region call
  that a backward pass run inside it cut in two (a piece adds time, not a call);
- :class:`BackwardMark`: an autograd hook fired for a call (its backward started or ended),
  or a backward pass returned (:attr:`MarkKind.PASS_END`, node 0).

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


class MarkKind(IntEnum):
    """What a backward mark says: a call's backward started, ended, or a pass returned.

    Example:
        >>> int(MarkKind.PASS_END)
        2
    """

    START = 0  # an output's gradient of the call is complete
    END = 1  # an input's gradient of the call is complete
    PASS_END = 2  # a backward pass returned: ends calls whose inputs needed no grad


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
    piece: bool = False


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
