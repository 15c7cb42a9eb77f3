"""The end of a module call's backward when its input is a leaf (a parameter fed to a module).

A leaf has no ``grad_fn``: the recorder (``collect/recorder.py``) marks the end of a call's
backward with a hook on the leaf tensor itself, which fires once the leaf's gradient is
complete, that is after *every* use of it in the step has run its backward. A module applied
to the same parameter several times a step (gpytorch's one shared ``Softplus`` turning
``raw_lengthscale`` into the lengthscale at each access, a parametrization re-run per call)
then had each call span from its own start to the last use's end: the whole backward of the
model between them, computed outside any module, was the ``Softplus``'s (an SVGP regression:
155 ms of a 157 ms backward). Where one of the call's outputs is made by a node that reads the
leaf directly (the ``AccumulateGrad`` node among its ``next_functions``: a one-op module), a
post-hook on that node ends the call when that node has run: its own gradient for the leaf is
computed then. Otherwise (several ops between the leaf and the outputs) the tensor hook stays.

Example:
    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(2))
    >>> reader_of(p, [torch.nn.functional.softplus(p)]).name()
    'SoftplusBackward0'
    >>> reader_of(p, [torch.tanh(torch.nn.functional.softplus(p))]) is None
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from torch import Tensor

from torchdoctor.collect.records import MarkKind, tensors_in

_END = int(MarkKind.END)  # (a plain int, as the recorder's marks)


def reader_of(leaf: Tensor, outputs: Sequence[Tensor]) -> Any:
    """The ``grad_fn`` of one of ``outputs`` that reads ``leaf`` directly, or None.

    Example:
        >>> import torch
        >>> p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
        >>> reader_of(q, [p * 2, p * q]).name()
        'MulBackward0'
    """
    for out in outputs:
        fn = out.grad_fn
        if fn is None:
            continue
        for nxt, _ in fn.next_functions:
            if nxt is not None and getattr(nxt, "variable", None) is leaf:
                return fn
    return None


def hook_leaf_ends(rec: Any, node: int, serial: int, output: Any) -> None:
    """Hook the end of call ``serial``'s backward on each of its leaf inputs (the recorder's
    ``leaves``): a post-hook on the output node that reads it, else the leaf's tensor hook
    (its handle in ``rec.handles``, removed at the step's end); each fires its mark once.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> p, marks = torch.nn.Parameter(torch.zeros(2)), []
        >>> rec = SimpleNamespace(leaves={7: [p]}, handles=[],
        ...                       _mark_once=lambda fired, *mark: marks.append(mark[:3]))
        >>> out = torch.nn.functional.softplus(p)
        >>> hook_leaf_ends(rec, 3, 7, out)
        >>> out.sum().backward()
        >>> marks, rec.handles, rec.leaves
        ([(3, 7, 1)], [], {})
    """
    made = tensors_in(output) if output is not None else ()
    for leaf in rec.leaves.pop(serial, ()):
        fn, mark = reader_of(leaf, made), partial(rec._mark_once, [False], node, serial, _END)
        try:
            if fn is not None:
                fn.register_hook(mark)
            else:
                rec.handles.append(leaf.register_hook(mark))
        except RuntimeError:  # e.g. a tensor subclass refusing hooks: leave it unmarked
            continue
