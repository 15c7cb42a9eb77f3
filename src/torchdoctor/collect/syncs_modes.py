"""The interception layer of the sync audit: its TorchFunctionMode and TorchDispatchMode.

Both modes only classify a call (:mod:`torchdoctor.collect.syncs_kinds`) and hand the
synchronizing ones to the audit (``audit._sync_call``); every other call runs untouched. The
function mode routes ``backward``/``autograd.grad`` through the audit so it stays active inside
the autograd engine. :class:`ZeroGradBypass` runs ``Optimizer.zero_grad`` without the mode.

Example:
    >>> import torch
    >>> from torchdoctor.collect.syncs_modes import mode_on_top
    >>> mode_on_top(object())
    False
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.optimizer import Optimizer
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from torchdoctor.collect.compiled import DYNAMO_SKIPS, PROFILER_MODES, call_as_written, compiling
from torchdoctor.collect.lines_install import (
    GRADIENT_UTILITIES,
    Replaced,
    insert_function_mode,
    remove_function_mode,
)
from torchdoctor.collect.syncs_kinds import WATCHED, aten_kind, function_kind

if TYPE_CHECKING:
    from torchdoctor.collect.syncs import SyncAudit

HOST_DEVICES = ("cpu", "meta")
_PLAIN, _WATCH, _BACKWARD, _FUSED_ATTENTION = 0, 1, 2, 3
#: calls that show a fused attention kernel in use (the advice then does not prescribe it):
#: SDPA itself, nn.MultiheadAttention's functional form when it runs SDPA (need_weights=False:
#: the mode sees that call, not the SDPA inside it), and the fused inference fast paths
FUSED_ATTENTION = frozenset(
    f
    for f in (
        torch.nn.functional.scaled_dot_product_attention,
        torch.nn.functional.multi_head_attention_forward,
        getattr(torch, "_transformer_encoder_layer_fwd", None),
        getattr(torch, "_native_multi_head_attention", None),
    )
    if f is not None
)
_routes: dict[Any, int] = {}


def _route(func: Any) -> int:
    try:
        route = _routes.get(func)
    except TypeError:  # an unhashable callable: never a sync we know
        return _PLAIN
    if route is None:
        if func in WATCHED:
            route = _WATCH
        elif func in FUSED_ATTENTION:
            route = _FUSED_ATTENTION
        elif func is torch.Tensor.backward or (
            getattr(func, "__module__", None) == "torch.autograd"
            and getattr(func, "__name__", None) in ("backward", "grad")
        ):
            route = _BACKWARD
        else:
            route = _PLAIN
        _routes[func] = route
    return route


def first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The first tensor among the positional, then keyword, arguments (None if none).

    Example:
        >>> first_tensor((1, torch.zeros(2)), {"out": torch.ones(1)})
        tensor([0., 0.])
        >>> first_tensor((), {}) is None
        True
    """
    for value in args:
        if isinstance(value, torch.Tensor):
            return value
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    return None


def mode_on_top(mode: Any) -> bool:
    """Whether mode is the innermost active TorchFunctionMode.

    Example:
        >>> from torchdoctor.collect.syncs import SyncAudit
        >>> with SyncAudit() as audit:
        ...     on_top = mode_on_top(audit._function_mode)
        >>> on_top, mode_on_top(audit._function_mode)
        (True, False)
    """
    depth = torch._C._len_torch_function_stack()
    return depth > 0 and torch._C._get_function_stack_at(depth - 1) is mode


class FunctionMode(TorchFunctionMode):
    """The fast audit's TorchFunctionMode: hands Python-level sync calls to the audit.

    Example:
        >>> from torchdoctor.collect.syncs import SyncAudit
        >>> audit, x = SyncAudit(), torch.ones(2)
        >>> with FunctionMode(audit):
        ...     value = x.sum().item()
        >>> value, [r["kind"] for r in audit.records()]
        (2.0, ['item'])
    """

    def __init__(self, audit: SyncAudit) -> None:
        super().__init__()
        self.audit = audit

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        audit = self.audit
        if compiling():  # Dynamo tracing (collect/compiled.py): the call as it is
            return call_as_written(func, args, kwargs)
        if audit._paused:  # paused while torch held the mode: the call as it is
            return func(*args, **(kwargs or {}))
        audit.function_calls += 1
        try:
            route = _routes.get(func)
        except TypeError:  # an unhashable callable: never a sync we know
            route = _PLAIN
        if route is None:
            route = _route(func)
        residency = audit.residency  # None unless predicting (a CPU run)
        if route == _PLAIN:
            if residency is None:
                return func(*args, **(kwargs or {}))
            return residency.after_call(func, args, kwargs, func(*args, **(kwargs or {})))
        kwargs = kwargs or {}
        if route == _BACKWARD:
            return audit._run_backward(self, func, args, kwargs)
        if route == _FUSED_ATTENTION:
            mha = torch.nn.functional.multi_head_attention_forward
            if func is not mha or kwargs.get("need_weights") is False:
                audit.fused_attention = True  # (with weights, MHA computes them unfused)
            return func(*args, **kwargs)
        kind = function_kind(func, args, kwargs)
        if kind is None:
            result = func(*args, **kwargs)
            return result if residency is None else residency.after_call(func, args, kwargs, result)
        return audit._sync_call(kind, func, args, kwargs, python_level=True)


DYNAMO_SKIPS.append(FunctionMode.__torch_function__)  # (collect/compiled.py)
PROFILER_MODES.append(FunctionMode)


class DispatchMode(TorchDispatchMode):
    """The thorough audit's TorchDispatchMode: hands aten-level sync calls to the audit.

    Example:
        >>> from torchdoctor.collect.syncs import SyncAudit
        >>> audit = SyncAudit(thorough=True)
        >>> with DispatchMode(audit):
        ...     nonzero = torch.tensor([0.0, 1.0]).nonzero()
        >>> nonzero.tolist(), [r["kind"] for r in audit.records()]
        ([[1]], ['nonzero'])
    """

    def __init__(self, audit: SyncAudit) -> None:
        super().__init__()
        self.audit = audit

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        audit = self.audit
        audit.dispatch_calls += 1
        kwargs = kwargs or {}
        if audit._suppress:
            return func(*args, **kwargs)
        kind = aten_kind(func, args, kwargs)
        if kind is None:
            return func(*args, **kwargs)
        return audit._sync_call(kind, func, args, kwargs, python_level=False)


class ZeroGradBypass:
    """While the fast audit runs, ``Optimizer.zero_grad`` runs without the function mode.

    It never synchronizes, but reads ``p.grad`` for every parameter, and each read through a
    TorchFunctionMode costs about as much as a small op (half the fast mode's overhead on a
    12-layer transformer step). ``remove()`` restores the original method.

    Example:
        >>> from torchdoctor.collect.syncs import SyncAudit
        >>> bypass = ZeroGradBypass(SyncAudit())
        >>> Optimizer.zero_grad is bypass.original
        False
        >>> bypass.remove()
        >>> Optimizer.zero_grad is bypass.original
        True
    """

    def __init__(self, audit: SyncAudit) -> None:
        self.original = original = Optimizer.__dict__["zero_grad"]

        @functools.wraps(original)
        def zero_grad(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            mode = audit._function_mode
            if mode is None or not mode_on_top(mode):
                return original(optimizer, *args, **kwargs)
            torch._C._pop_torch_function_stack()
            try:
                return original(optimizer, *args, **kwargs)
            finally:
                torch._C._push_on_torch_function_stack(mode)

        Optimizer.zero_grad = zero_grad  # type: ignore[method-assign]

    def remove(self) -> None:
        Optimizer.zero_grad = self.original  # type: ignore[method-assign]


#: where a GRADIENT_UTILITIES function takes ``error_if_nonfinite`` positionally (the one
#: argument that makes it read the norm on the host)
_NONFINITE_AT = {"clip_grad_norm_": 3, "get_total_norm": 2}


class GradientUtilityBypass:
    """While the fast audit runs, ``clip_grad_norm_`` and its kin (``lines_install.
    GRADIENT_UTILITIES``) run without the function mode, unless asked to check the norm on the
    host (``error_if_nonfinite=True``: a sync the audit must see).

    Like ``zero_grad`` they read ``p.grad``, ``.device`` and ``.dtype`` of every parameter,
    each a dispatch through the mode: on nanoGPT's 15 parameters the audit made
    ``clip_grad_norm_`` take 1.55 ms instead of 0.59 ms. ``remove()`` restores the functions.

    Example:
        >>> from torchdoctor.collect.syncs import SyncAudit
        >>> before = torch.nn.utils.clip_grad_norm_
        >>> bypass = GradientUtilityBypass(SyncAudit())
        >>> torch.nn.utils.clip_grad_norm_ is before
        False
        >>> bypass.remove()
        >>> torch.nn.utils.clip_grad_norm_ is before
        True
    """

    def __init__(self, audit: SyncAudit) -> None:
        self.replaced = [
            Replaced(module, name, _without_audit(audit, getattr(module, name), _NONFINITE_AT.get(name)))
            for module, name in GRADIENT_UTILITIES
        ]

    def remove(self) -> None:
        for replaced in self.replaced:
            replaced.remove()


def _without_audit(audit: SyncAudit, original: Any, nonfinite_at: int | None) -> Any:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mode = audit._function_mode
        checks = kwargs.get("error_if_nonfinite") or (
            nonfinite_at is not None and len(args) > nonfinite_at and args[nonfinite_at]
        )
        if checks or mode is None:
            return original(*args, **kwargs)
        # (the hot-lines mode may be above it; it parks itself inside: the order is kept)
        depth = remove_function_mode(mode)
        if depth is None:  # not on the stack (paused between windows)
            return original(*args, **kwargs)
        try:
            return original(*args, **kwargs)
        finally:
            insert_function_mode(mode, depth)

    return wrapper
