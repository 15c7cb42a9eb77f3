"""Cheap fingerprints of a module call's inputs, to spot loop-invariant recomputation.

Two calls of the same module within one step whose inputs have equal fingerprints, while its
parameters kept their versions (no optimizer step or in-place update in between), computed the
same thing twice (seed 001: the encoder re-run by every denoising step on unchanged inputs).
A tensor is identified by its data pointer (storage and offset), ``_version`` (bumped by
in-place writes), shape, stride, dtype and device (a sparse or nested tensor, which has no
data pointer, by its identity, version, shape and layout: GCN's sparse features and adjacency
matrix); other arguments by value when they are
small immutables, else by type and identity; keyword arguments by name and the same (the
profiler's global forward hook receives them: ``encoder(input_ids=ids)`` is compared, and
``denoiser(cond, t=t)`` with a new ``t`` is new work). Memory can be reused after a tensor is
freed, so a fingerprint also carries weak references to its tensors: a later match counts only
while all of them are still alive.

Example:
    >>> import torch
    >>> x = torch.ones(3)
    >>> fingerprint((x,))[0] == fingerprint((x,))[0]
    True
    >>> before = fingerprint((x,))[0]
    >>> _ = x.add_(1)  # an in-place write bumps the version: no longer the same input
    >>> fingerprint((x,))[0] == before
    False
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

_SCALARS = (int, float, bool, str, type(None))
_STRIDED = torch.strided


def fingerprint(
    args: tuple, kwargs: dict[str, Any] | None = None, derived: dict[int, tuple] | None = None
) -> tuple[tuple, Callable[[], Any]] | None:
    """``(signature, anchor)`` for positional and keyword args, or None when no argument is a
    tensor.

    ``anchor()`` returns the first tensor while every tensor of the call is alive, None after
    one was freed. ``derived`` maps ``id(tensor)`` to ``(weak reference, description, the
    making call's anchor, version)`` for outputs of earlier calls (:func:`note_outputs`): such
    a tensor (unchanged since) is described
    by the call that made it and anchored on that call's inputs, so ``encoder(embed(src))``
    re-run on the same ``src`` has the same signature although ``embed`` made a new tensor.

    Example:
        >>> import torch
        >>> x = torch.zeros(2, 3)
        >>> signature, anchor = fingerprint((x, 4))
        >>> signature[0][1:4], signature[1], anchor() is x
        ((0, torch.Size([2, 3]), (3, 1)), 4, True)
        >>> fingerprint((1, "a")) is None  # no tensor: nothing to track
        True
        >>> fingerprint((), {"input_ids": x})[0] == fingerprint((), {"input_ids": x})[0]
        True
        >>> fingerprint((x,), {"t": 1})[0] == fingerprint((x,), {"t": 2})[0]  # a new timestep
        False
        >>> adjacency = torch.eye(3).to_sparse()  # sparse: compared by identity and version
        >>> fingerprint((adjacency,))[0] == fingerprint((adjacency,))[0]
        True
        >>> fingerprint((adjacency,))[0] == fingerprint((adjacency.clone(),))[0]
        False
    """
    parts: list[Any] = []
    anchors: list[torch.Tensor] = []
    for arg in args:
        parts.append(_describe(arg, anchors, derived))
    if kwargs:
        for name, value in kwargs.items():
            parts.append(("=", name))  # (a positional value is never such a tuple: see below)
            parts.append(_describe(value, anchors, derived))
    if not anchors:
        return None
    try:
        refs = tuple(weakref.ref(tensor) for tensor in anchors)
    except TypeError:  # pragma: no cover - tensors always support weak references
        return None
    return tuple(parts), (refs[0] if len(refs) == 1 else _AllAlive(refs))


def note_outputs(
    derived: dict[int, tuple], node: int, signature: tuple, anchor: Any, output: Any
) -> None:
    """Record the tensor outputs of a call of ``node`` on inputs of ``signature`` (anchored by
    ``anchor``, the inputs' :func:`fingerprint` anchor) in ``derived``: a later call given one
    of them is compared by the call that made it (see :func:`fingerprint`).

    Example:
        >>> import torch
        >>> src, derived = torch.ones(2), {}
        >>> signature, anchor = fingerprint((src,))
        >>> out = src * 2  # (a module's output)
        >>> note_outputs(derived, 7, signature, anchor, out)
        >>> again = src * 2  # (the same call re-run: a new tensor)
        >>> note_outputs(derived, 7, signature, anchor, again)
        >>> fingerprint((out,), derived=derived)[0] == fingerprint((again,), derived=derived)[0]
        True
    """
    tensors = [output] if isinstance(output, torch.Tensor) else (
        [t for t in output if isinstance(t, torch.Tensor)]
        if isinstance(output, (tuple, list)) else []
    )  # fmt: skip
    for index, tensor in enumerate(tensors[:_OUTPUTS]):
        try:
            version = tensor._version
            derived[id(tensor)] = (weakref.ref(tensor), ("out", node, signature, index), anchor,
                                   version)  # fmt: skip
        except Exception:  # (a tensor subclass without a version: described by its address)
            continue


class SeenInputs:
    """The latest call of each (module node, input signature) in a step: its weak anchor, its
    module's state versions and whether grad was enabled. A call made with grad is reusable
    only until a backward pass consumes its graph (:meth:`graphs_consumed`); such calls are
    kept apart, so that costs O(1) however many there were (a loop of LSTMCells: 60,000 calls
    a step, and one backward pass per LBFGS closure).

    Example:
        >>> import torch
        >>> x = torch.ones(2)
        >>> signature, anchor = fingerprint((x,))
        >>> seen = SeenInputs()
        >>> seen.again(1, signature, anchor, weights=0, grad=True)  # the first call
        False
        >>> seen.again(1, signature, anchor, weights=0, grad=False)  # the same inputs
        True
        >>> seen.graphs_consumed()  # backward ran: the call with grad is gone
        >>> seen.again(1, signature, anchor, weights=0, grad=False)
        False
    """

    def __init__(self) -> None:
        self.no_grad: dict[tuple[int, Any], tuple[Any, int, bool]] = {}
        self.grad: dict[tuple[int, Any], tuple[Any, int, bool]] = {}

    def __bool__(self) -> bool:
        return bool(self.no_grad or self.grad)

    def again(self, node: int, signature: Any, anchor: Any, weights: int, grad: bool) -> bool:
        """Whether this call of ``node`` repeats an earlier one (same inputs, all alive, same
        state versions, and that call had grad if this one has); else it is recorded."""
        at = (node, signature)
        seen = self.grad.get(at) or self.no_grad.get(at)
        if seen is not None and seen[0]() is not None and seen[1] == weights and seen[2] >= grad:
            return True
        kept, other = (self.grad, self.no_grad) if grad else (self.no_grad, self.grad)
        kept[at] = (anchor, weights, grad)
        other.pop(at, None)
        return False

    def graphs_consumed(self) -> None:
        """A backward pass returned: the calls made with grad are no longer reusable."""
        self.grad = {}

    def carried(self) -> SeenInputs:
        """A new table of the entries whose inputs are still alive (kept across steps)."""
        table = SeenInputs()
        for mine, theirs in ((self.no_grad, table.no_grad), (self.grad, table.grad)):
            theirs.update((key, value) for key, value in mine.items() if value[0]() is not None)
        return table


#: outputs of one call recorded for :func:`note_outputs` (a tuple's first few)
_OUTPUTS = 4


def _describe(arg: Any, anchors: list[torch.Tensor], derived: dict[int, tuple] | None = None) -> Any:
    """One argument's part of a signature (a tuple argument is ``(type, id)``); its tensor is
    appended to ``anchors`` (for an output of an earlier call in ``derived``: that call's
    input, and the call describes it)."""
    if isinstance(arg, torch.Tensor):
        made = derived.get(id(arg)) if derived else None
        if made is not None and made[0]() is arg and arg._version == made[3]:
            source = made[2]()  # (the making call's inputs, alive: no address reused)
            if source is not None:
                anchors.append(source)
                return made[1]
        anchors.append(arg)
        if arg.layout is not _STRIDED:  # sparse, nested: no data pointer; the tensor itself
            return (id(arg), arg._version, arg.shape, arg.layout, arg.dtype, arg.device)
        return (arg.data_ptr(), arg._version, arg.shape, arg.stride(), arg.dtype, arg.device)
    if isinstance(arg, _SCALARS):
        return arg
    return (type(arg), id(arg))


class _AllAlive:
    """The anchor of several tensors: the first while all are alive, else None (a tensor
    freed and another allocated at its address, as a new timestep tensor each iteration is,
    is a new input).

    Example:
        >>> import torch, weakref
        >>> a, b = torch.ones(1), torch.ones(1)
        >>> anchor = _AllAlive((weakref.ref(a), weakref.ref(b)))
        >>> anchor() is a
        True
        >>> del b
        >>> anchor() is None
        True
    """

    __slots__ = ("refs",)

    def __init__(self, refs: tuple[weakref.ref, ...]) -> None:
        self.refs = refs

    def __call__(self) -> Any:
        first = None
        for ref in self.refs:
            tensor = ref()
            if tensor is None:
                return None
            if first is None:
                first = tensor
        return first
