"""Installing the hot-lines collector, and naming the calls it times.

- :func:`wrap_function_apply`: custom autograd Functions are no torch function, so
  ``torch.autograd.Function.apply`` is wrapped while the collector runs;
- :func:`wrap_zero_grad`, :func:`wrap_gradient_utilities`: torch's own Python code that walks
  every parameter (``Optimizer.zero_grad``, ``clip_grad_norm_``) runs with the mode parked;
- :func:`remove_function_mode` / :func:`insert_function_mode`: take a TorchFunctionMode off
  the stack wherever it is (the sync audit's mode may have been pushed after it), and put it
  back at the same depth (the collector parks its mode in the optimizer and data phases);
- :func:`op_name`: ``torch.linalg.solve``, ``Tensor.__matmul__``, ``MyFunction.apply``.

Example:
    >>> op_name(torch.linalg.solve)
    'torch.linalg.solve'
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from types import FunctionType
from typing import Any

import torch

from torchdoctor.collect.compiled import compiling
from torchdoctor.collect.lines_variants import VariantCall
from torchdoctor.collect.state import STATE

#: phases whose torch calls are charged to lines (backward is measured through graph hooks;
#: the optimizer and data phases have their own rows and advice)
COUNTED_PHASES = frozenset({"forward", "other"})
#: phases in which the collector takes its mode off the stack: their torch calls are many (a
#: per-parameter optimizer, a collate function) and each would pay the mode's dispatch
PARKED_PHASES = frozenset({"optimizer", "data"})

_names: dict[Any, str] = {}
PLAIN, PASS = 0, 1
PYTHON_LEVEL = 2  # flag: a Python function (torch's Python ``handle_torch_function`` path)
MATMUL = 4  # flag: a matrix multiply, whose operands' layout (sparse or dense) is named
_MATMULS = frozenset(
    {"mm", "spmm", "smm", "matmul", "__matmul__", "__rmatmul__", "addmm", "bmm", "baddbmm"}
)
PROBABILITIES = 8  # flag: a loss taking probabilities, named apart when they are a sigmoid's
_PROBABILITY_LOSSES = frozenset({"binary_cross_entropy"})
ROUTES: dict[Any, int] = {}  # torch callable -> PLAIN (timed) or PASS, | PYTHON_LEVEL


def route_of(func: Any) -> int:
    """``PASS`` for the calls passed through untimed (backward passes, attribute getters and
    setters, profiler annotations), else ``PLAIN``; with the ``PYTHON_LEVEL`` flag for Python
    functions (``torch.nn.functional.layer_norm``, ``Tensor.split``: their dispatch to a mode
    takes torch's slower Python path, which the overhead estimate counts apart); cached in
    ``ROUTES``.

    Example:
        >>> route_of(torch.Tensor.backward) == PASS | PYTHON_LEVEL, route_of(torch.exp) == PLAIN
        (True, True)
        >>> route_of(torch.nn.functional.layer_norm) == PLAIN | PYTHON_LEVEL
        True
    """
    route = PLAIN
    name = getattr(func, "__name__", "")
    if name in ("__get__", "__set__") or func is torch.Tensor.backward:
        route = PASS
    elif name.startswith("_record_function"):  # profiler annotations (Optimizer.step's)
        route = PASS
    elif getattr(func, "__module__", None) == "torch.autograd" and name in ("backward", "grad"):
        route = PASS
    if isinstance(func, FunctionType):
        route |= PYTHON_LEVEL
    if name in _MATMULS:
        route |= MATMUL
    elif name in _PROBABILITY_LOSSES:
        route |= PROBABILITIES
    try:
        ROUTES[func] = route
    except TypeError:
        pass
    return route


def op_name(func: Any) -> str:
    """A readable name for a torch callable: ``torch.linalg.solve``, ``Tensor.__matmul__``.

    Example:
        >>> op_name(torch.linalg.solve), op_name(torch.Tensor.__matmul__)
        ('torch.linalg.solve', 'Tensor.__matmul__')
    """
    try:
        cached = _names.get(func)
    except TypeError:
        cached = None
    if cached is not None:
        return cached
    if isinstance(func, VariantCall):
        text = f"{op_name(func.func)}[{func.variant}]"
        _names[func] = text
        return text
    if isinstance(func, type) and issubclass(func, torch.autograd.Function):
        text = f"{func.__name__}.apply"
        _names[func] = text
        return text
    name = getattr(func, "__name__", None) or type(func).__name__
    qualname = getattr(func, "__qualname__", name) or name
    module = getattr(func, "__module__", None) or ""
    if "Tensor" in qualname.split(".")[0]:
        text = "Tensor." + qualname.split(".")[-1]
    elif module.startswith("torch.nn.utils"):  # clip_grad_norm_: as users call it
        text = "torch.nn.utils." + name
    elif module.startswith("torch.amp") and "." in qualname:  # GradScaler.unscale_
        text = qualname
    elif module.startswith("torch._C._linalg") or name.startswith("linalg_"):
        text = "torch.linalg." + name.removeprefix("linalg_")
    elif module.startswith("torch.nn.functional") or module == "torch._C._nn":
        text = "F." + name
    elif module.startswith("torch"):
        text = "torch." + name
    else:
        text = f"{module}.{qualname}" if module else qualname
    try:
        _names[func] = text
    except TypeError:
        pass
    return text


def wrap_function_apply(collector: Any) -> Callable[[], None]:
    """Custom autograd Functions (``MyFn.apply(x)``) are no torch function: wrap
    ``torch.autograd.Function.apply`` so their forward is timed as one call of the line (the
    ops inside run untimed) and their backward node is hooked. Returns the undo.

    Example:
        >>> class Collector:  # the LineCollector's interface: ``active`` and ``timed``
        ...     active = True
        ...     def timed(self, call, args, kwargs, frame, op):
        ...         self.seen = op_name(op)
        ...         return call(*args, **kwargs)
        >>> class Double(torch.autograd.Function):
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         return 2 * x
        ...     @staticmethod
        ...     def backward(ctx, grad):
        ...         return 2 * grad
        >>> collector = Collector()
        >>> undo = wrap_function_apply(collector)
        >>> Double.apply(torch.ones(2)), collector.seen
        (tensor([2., 2.]), 'Double.apply')
        >>> undo()
    """
    function = torch.autograd.function.Function
    original = function.__dict__["apply"]
    call = _unbound_classmethod(original)

    def apply(cls: Any, *args: Any, **kwargs: Any) -> Any:
        if compiling() or not collector.active or STATE.phase not in COUNTED_PHASES:
            return call(cls, *args, **kwargs)
        collector.active = False  # the ops of its forward belong to this call
        try:
            return collector.timed(partial(call, cls), args, kwargs, sys._getframe(1), op=cls)
        finally:
            collector.active = True

    function.apply = classmethod(apply)  # type: ignore[assignment]

    def undo() -> None:
        if function.__dict__.get("apply") is not original:
            function.apply = original  # type: ignore[assignment]

    return undo


def _unbound_classmethod(method: Any) -> Callable[..., Any]:
    """``method``'s function taking the class first: a Python ``classmethod``'s ``__func__``
    (torch <= 2.13's ``Function.apply``) or, for one written in C (a ``classmethod_descriptor``:
    torch 2.14 made ``Function.apply`` its C ``_FunctionBase.apply``), a call binding it.

    Example:
        >>> _unbound_classmethod(classmethod(lambda cls, x: (cls, x)))(int, 1)
        (<class 'int'>, 1)
        >>> _unbound_classmethod(dict.__dict__["fromkeys"])(dict, "ab")
        {'a': None, 'b': None}
    """
    function = getattr(method, "__func__", None)
    if function is not None:
        return function
    if not hasattr(method, "__get__"):
        raise TypeError(f"expected a classmethod, got {type(method).__name__}: {method!r}")
    return lambda cls, *args, **kwargs: method.__get__(None, cls)(*args, **kwargs)


def wrap_zero_grad(collector: Any) -> Callable[[], None]:
    """Run ``Optimizer.zero_grad`` with the collector's mode parked: it reads and writes
    ``p.grad`` of every parameter, each a torch call through the mode (two dispatches per
    parameter, every step) that no line needs. Returns the undo (which leaves a wrapper
    installed on top of this one in place).

    Example:
        >>> class Collector:  # the LineCollector's interface: ``active``, ``park``, ``unpark``
        ...     active, log = True, []
        ...     parked = lambda self: False
        ...     park = lambda self: self.log.append("park")
        ...     unpark = lambda self: self.log.append("unpark")
        >>> collector = Collector()
        >>> undo = wrap_zero_grad(collector)
        >>> torch.optim.SGD([torch.ones(1, requires_grad=True)], lr=0.1).zero_grad()
        >>> undo(); collector.log
        ['park', 'unpark']
    """
    optimizer = torch.optim.Optimizer
    original = optimizer.__dict__["zero_grad"]

    def zero_grad(self: Any, *args: Any, **kwargs: Any) -> Any:
        if compiling() or not collector.active or collector.parked():
            return original(self, *args, **kwargs)
        collector.park()
        try:
            return original(self, *args, **kwargs)
        finally:
            collector.unpark()

    optimizer.zero_grad = zero_grad  # type: ignore[method-assign]

    def undo() -> None:
        if optimizer.__dict__.get("zero_grad") is zero_grad:
            optimizer.zero_grad = original  # type: ignore[method-assign]

    return undo


#: torch functions a training step calls once that read every parameter's ``.grad`` (each read
#: a dispatch through the mode): (module or class, attribute) pairs, wrapped where users reach
#: them (``torch.nn.utils.clip_grad_norm_``) and where they are defined
GRADIENT_UTILITIES = tuple(
    (module, name)
    for module in (torch.nn.utils, torch.nn.utils.clip_grad)
    for name in ("clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm")
    if hasattr(module, name)
) + ((torch.amp.GradScaler, "unscale_"),)  # (each optimizer's grads: torch.cuda.amp's too)


def wrap_gradient_utilities(collector: Any) -> Callable[[], None]:
    """Time each :data:`GRADIENT_UTILITIES` call as one call of the user's line, with the
    collector's mode parked inside: ``clip_grad_norm_`` reads ``p.grad``, ``.device`` and
    ``.dtype`` of every parameter, each a dispatch through the mode, and timed call by call it
    showed 11x its own time on nanoGPT (1.64 ms for 0.146 ms; 39 timed calls and ~100 reads).
    Returns the undo (which leaves a wrapper installed on top of one of these in place).
    ``from torch.nn.utils import clip_grad_norm_`` run before the collector first starts keeps
    the unwrapped function: its calls are timed one by one, as before.

    Example:
        >>> class Collector:  # the LineCollector's interface
        ...     active, log = True, []
        ...     parked = lambda self: False
        ...     park = lambda self: self.log.append("park")
        ...     unpark = lambda self: self.log.append("unpark")
        ...     def timed(self, call, args, kwargs, frame, op):
        ...         self.log.append(op_name(op))
        ...         return call(*args, **kwargs)
        >>> collector = Collector()
        >>> undo = wrap_gradient_utilities(collector)
        >>> w = torch.ones(2, requires_grad=True); w.sum().backward()
        >>> float(torch.nn.utils.clip_grad_norm_([w], 1.0)) > 0
        True
        >>> undo(); collector.log
        ['torch.nn.utils.clip_grad_norm_', 'park', 'unpark']
    """
    replaced = [
        Replaced(module, name, _parked_and_timed(collector, getattr(module, name)))
        for module, name in GRADIENT_UTILITIES
    ]

    def undo() -> None:
        for one in replaced:
            one.remove()

    return undo


class Replaced:
    """``owner.name`` replaced by ``value`` until :meth:`remove`, which leaves a later
    replacement by someone else in place.

    Example:
        >>> import math
        >>> r = Replaced(math, "tau", 1.0)
        >>> math.tau, r.remove(), round(math.tau, 2)
        (1.0, None, 6.28)
    """

    def __init__(self, owner: Any, name: str, value: Any) -> None:
        self.owner, self.name, self.value = owner, name, value
        self.original = getattr(owner, name)
        setattr(owner, name, value)

    def remove(self) -> None:
        if getattr(self.owner, self.name, None) is self.value:
            setattr(self.owner, self.name, self.original)


def _parked_and_timed(collector: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    def parked(*args: Any, **kwargs: Any) -> Any:
        collector.park()
        try:
            return original(*args, **kwargs)
        finally:
            collector.unpark()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if compiling() or not collector.active or collector.parked():
            return original(*args, **kwargs)
        if STATE.phase not in COUNTED_PHASES:
            return parked(*args, **kwargs)
        return collector.timed(parked, args, kwargs, sys._getframe(1), op=original)

    wrapper.__name__ = wrapper.__qualname__ = original.__name__
    wrapper.__doc__ = original.__doc__
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapper


#: mode-stack work that could not be done inside a mode's own handler (torch pops a mode for the
#: time its handler runs and pushes it back after, so a step cut inside ``Tensor.backward`` can
#: not take the mode off): each entry returns True once done; :func:`run_pending` runs them at
#: the next point outside the handlers (a phase change; the sync audit, after a backward pass)
PENDING: list[Callable[[], bool]] = []


def run_pending() -> None:
    """Run the :data:`PENDING` work; keep what is not done yet.

    Example:
        >>> done = []
        >>> PENDING.append(lambda: done.append(1) or True)
        >>> run_pending(); done, PENDING
        ([1], [])
    """
    PENDING[:] = [work for work in list(PENDING) if not work()]


def remove_function_mode(mode: Any) -> int | None:
    """Take ``mode`` off the torch-function mode stack, keeping the modes pushed after it;
    returns the depth it was at (None when it was not on the stack: e.g. popped for the time
    its own handler runs).

    Example:
        >>> from torch.overrides import TorchFunctionMode
        >>> below, above = TorchFunctionMode(), TorchFunctionMode()
        >>> depth = torch._C._len_torch_function_stack()
        >>> _, _ = below.__enter__(), above.__enter__()
        >>> remove_function_mode(below) - depth
        0
        >>> torch._C._len_torch_function_stack() - depth, torch._C._get_function_stack_at(depth) is above
        (1, True)
        >>> above.__exit__(None, None, None)
    """
    above = []
    found = None
    try:
        while torch._C._len_torch_function_stack() > 0:
            top = torch._C._pop_torch_function_stack()
            if top is mode:
                found = torch._C._len_torch_function_stack()
                break
            above.append(top)
    finally:
        for other in reversed(above):
            torch._C._push_on_torch_function_stack(other)
    return found


def insert_function_mode(mode: Any, depth: int) -> None:
    """Put ``mode`` back on the torch-function mode stack at ``depth`` (or on top when the
    stack is shallower), under the modes pushed since: the order of modes is kept.

    Example:
        >>> from torch.overrides import TorchFunctionMode
        >>> below, above = TorchFunctionMode(), TorchFunctionMode()
        >>> base = torch._C._len_torch_function_stack()
        >>> _, _ = below.__enter__(), above.__enter__()
        >>> insert_function_mode(below, remove_function_mode(below))
        >>> torch._C._get_function_stack_at(base) is below, torch._C._get_function_stack_at(base + 1) is above
        (True, True)
        >>> above.__exit__(None, None, None); below.__exit__(None, None, None)
    """
    above = []
    try:
        while torch._C._len_torch_function_stack() > depth:
            above.append(torch._C._pop_torch_function_stack())
        torch._C._push_on_torch_function_stack(mode)
    finally:
        for other in reversed(above):
            torch._C._push_on_torch_function_stack(other)


def tensors_in(value: Any) -> list[torch.Tensor]:
    """The tensors of a call's result: itself, or those in a tuple or list.

    Example:
        >>> len(tensors_in((torch.ones(1), 2, torch.ones(2))))
        2
    """
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [v for v in value if isinstance(v, torch.Tensor)]
    return []
