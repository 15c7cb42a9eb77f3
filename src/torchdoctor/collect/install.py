"""Install and remove everything the profiler hooks into, exception-safely.

Installed while a profiler runs, removed on every exit path (each removal is attempted even if
another fails):

- global module forward pre-hook and forward hook (``always_call=True``), switched off in
  the profiler's light steps, or onto the outermost modules alone in an inference loop's
  (:class:`~torchdoctor.collect.module_hooks.ModuleHooksSwitch`);
- global optimizer step pre- and post-hooks (phase ``optimizer``, step boundaries);
- wrappers around ``torch.autograd.backward`` and ``torch.autograd.grad`` (phase ``backward``;
  region boundaries are hooked as the pass starts);
- wrappers around ``torch.no_grad``'s ``__enter__``/``__exit__`` on the profiling thread (a
  hand-written parameter update in a loop without an optimizer is the ``optimizer`` phase);
- a wrapper around ``DataLoader`` iterators' ``__next__`` on the profiling thread (phase
  ``data``: the wait for a batch of an unmodified script's loader);
- a ``saved_tensors_hooks`` pair counting activation bytes, pushed only during the one step
  that counts them (:class:`SavedTensorsSwitch`), and a wrapper around
  ``torch.autograd.graph.disable_saved_tensors_hooks`` that takes them off for ``torch.func``
  transforms, which refuse them;
- a warnings filter for torch's notice about global hooks on compiled modules (the hooks are
  the profiler's).

Example:
    >>> import torch
    >>> from torch.nn.modules import module
    >>> before = len(module._global_forward_hooks)
    >>> hooks = Installation()
    >>> switch = hooks.add_module_hooks(lambda m, a: None, lambda m, a, k, o=None: None)
    >>> hooks.remove()
    >>> len(module._global_forward_hooks) == before
    True
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import optimizer as _optimizer

from torchdoctor.collect.module_hooks import ModuleHooksSwitch

_ROOTS = {"backward": "tensors", "grad": "outputs"}  # keyword of the first argument
_CREATE_GRAPH_AT = {"backward": 3, "grad": 4}  # create_graph's position in their signatures


class Installation:
    """A stack of undo actions; :meth:`remove` runs them all, newest first.

    Example:
        >>> events = []
        >>> hooks = Installation()
        >>> hooks.wrap_autograd(lambda *_: events.append("enter"), lambda: events.append("leave"))
        >>> torch.ones(1, requires_grad=True).sum().backward()
        >>> hooks.remove()
        >>> torch.ones(1, requires_grad=True).sum().backward()  # unwrapped again
        >>> events
        ['enter', 'leave']
    """

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def add_module_hooks(self, pre: Callable, post: Callable) -> ModuleHooksSwitch:
        """Global module forward pre-hook and forward hook, installed now; the switch removes
        and re-installs them (the profiler's light steps run without them). ``post`` gets the
        keyword arguments: ``post(module, args, kwargs, output)``, or ``post(module, args,
        output)`` after a forward that raised (torch's call there)."""
        switch = ModuleHooksSwitch(pre, post)
        switch.on()
        self._undo.append(switch.off)
        self._undo.append(_quiet_compile_hook_warning())
        return switch

    def add_optimizer_hooks(self, pre: Callable, post: Callable) -> None:
        pre_handle = _optimizer.register_optimizer_step_pre_hook(pre)
        self._undo.append(pre_handle.remove)
        post_handle = _optimizer.register_optimizer_step_post_hook(post)
        self._undo.append(post_handle.remove)

    def wrap_autograd(self, enter: Callable[[Any], None], leave: Callable[[], None]) -> None:
        """Call ``enter(roots, graph_kept, grad)``/``leave()`` around every
        ``torch.autograd.backward`` and ``grad`` (``roots``: the tensors the pass starts from,
        their first argument; ``graph_kept``: ``create_graph=True``, the gradients
        differentiable, unless torch.func's transforms asked for it: they always do, for their
        own nesting; ``grad``: a ``torch.autograd.grad`` pass).

        One pass is one enter/leave: under a torch function mode (the sync audit, the hot
        lines) ``torch.autograd.grad`` dispatches to the mode, which calls the public function
        (this wrapper) again; that nested call goes straight through (it ended every step
        twice: ``torch.func.grad`` under ``run``)."""
        inside = threading.local()
        for name in ("backward", "grad"):
            original = getattr(torch.autograd, name)

            @functools.wraps(original)
            def wrapper(
                *args: Any, _target=original, _key=_ROOTS[name], _at=_CREATE_GRAPH_AT[name],
                _grad=name == "grad", **kwargs: Any,
            ) -> Any:
                if getattr(inside, "active", False):
                    return _target(*args, **kwargs)
                inside.active = True
                try:
                    kept = kwargs.get("create_graph", args[_at] if len(args) > _at else False)
                    if kept and sys._getframe(1).f_globals.get("__name__", "").startswith(
                        "torch._functorch"
                    ):
                        kept = False
                    enter(args[0] if args else kwargs.get(_key), bool(kept), _grad)
                    try:
                        return _target(*args, **kwargs)
                    finally:
                        leave()
                finally:
                    inside.active = False

            setattr(torch.autograd, name, wrapper)
            self._undo.append(functools.partial(setattr, torch.autograd, name, original))
            self._undo.append(_as_torchscript_builtin(wrapper, original))

    def wrap_no_grad(
        self, enter: Callable[[bool, Callable[[], bool]], bool | None], leave: Callable[[], None]
    ) -> None:
        """Call ``enter(grad_was_enabled, opened_by_torch)`` after entering and ``leave()``
        after leaving each ``torch.no_grad()`` block (``with`` or decorator) opened on the
        calling thread; ``opened_by_torch()``: whether torch's own code opened it
        (``clip_grad_norm_``), a frame check made only when asked. When ``enter`` returns True
        the blocks need watching no more: the originals are put back (an RL rollout opens one
        per environment step; a light step then pays nothing for it)."""
        cls = torch.autograd.grad_mode.no_grad
        original_enter, original_exit = cls.__dict__["__enter__"], cls.__dict__["__exit__"]
        thread = threading.get_ident()

        def undo() -> None:
            cls.__enter__, cls.__exit__ = original_enter, original_exit

        # (functools.wraps: torch.jit.script compiles no_grad's methods from their source, found
        # through __wrapped__: torch.distributed.optim's functional optimizers at import)
        @functools.wraps(original_enter)
        def __enter__(context: Any) -> Any:
            was_enabled = torch.is_grad_enabled()
            result = original_enter(context)
            if threading.get_ident() == thread:
                frame = sys._getframe(1)
                if enter(was_enabled, lambda: _opened_by_torch(frame)):
                    undo()  # (this block's exit is then the original's: nothing to undo)
            return result

        @functools.wraps(original_exit)
        def __exit__(context: Any, *exc: Any) -> Any:
            try:
                return original_exit(context, *exc)
            finally:
                if threading.get_ident() == thread:
                    leave()

        cls.__enter__, cls.__exit__ = __enter__, __exit__
        self._undo.append(undo)

    def wrap_data_loader(self, enter: Callable[[Any], Any], leave: Callable[[Any], None]) -> None:
        """Call ``token = enter(iterator)`` before and ``leave(token)`` after each ``next()`` on
        a ``torch.utils.data.DataLoader`` iterator, and ``enter(None)`` / ``leave(token)``
        around ``iter()`` of a DataLoader (its workers start there, every epoch unless they
        persist: 60 ms an epoch in lucidrains' diffusion Trainer's ``cycle(dl)``, which counted
        as ``other``), on the calling thread only."""
        from torch.utils.data import dataloader

        thread = threading.get_ident()
        for cls, name, arg in ((dataloader._BaseDataLoaderIter, "__next__", True),
                               (dataloader.DataLoader, "__iter__", False)):  # fmt: skip
            original = cls.__dict__[name]

            def wrapper(obj: Any, _original: Any = original, _arg: bool = arg) -> Any:
                if threading.get_ident() != thread:
                    return _original(obj)
                token = enter(obj if _arg else None)
                try:
                    return _original(obj)
                finally:
                    leave(token)

            setattr(cls, name, functools.wraps(original)(wrapper))
            self._undo.append(functools.partial(setattr, cls, name, original))

    def add_saved_tensors_hooks(self, pack: Callable, unpack: Callable) -> SavedTensorsSwitch:
        """Saved-tensor hooks that are pushed only while switched on (see the class)."""
        switch = SavedTensorsSwitch(pack, unpack)
        self._undo.append(switch.off)
        self._undo.append(_step_aside_for_disabled_hooks(switch))
        return switch

    def add_undo(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def remove(self) -> None:
        errors: list[BaseException] = []
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # keep removing the rest
                errors.append(exc)
        if errors:
            raise RuntimeError(f"torchdoctor could not remove all of its hooks: {errors!r}")


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_DECORATOR_FILE = os.path.join(_TORCH_DIR, "utils", "_contextlib.py")


def _as_torchscript_builtin(wrapper: Callable, original: Callable) -> Callable[[], None]:
    """Make TorchScript compile calls of ``wrapper`` as the aten op it compiles ``original``
    to (``torch.autograd.grad`` -> ``aten::grad``: its builtin table is keyed by the function
    object; a gradient penalty scripted while the profiler runs failed to compile our wrapper's
    Python). Returns the undo; nothing when this torch has no such table.

    Example:
        >>> undo = _as_torchscript_builtin(lambda *a: None, print)  # (print: no aten op)
        >>> undo()
    """
    try:
        from torch.jit import _builtins

        op = next((name for fn, name in _builtins._builtin_ops if fn is original), None)
    except (ImportError, AttributeError, TypeError):
        return lambda: None
    if op is None:
        return lambda: None
    entry = (wrapper, op)
    _builtins._builtin_ops.append(entry)  # (the table is built from it on first use)
    if _builtins._builtin_table is not None:
        _builtins._builtin_table[id(wrapper)] = op

    def undo() -> None:
        with contextlib.suppress(ValueError):
            _builtins._builtin_ops.remove(entry)
        if _builtins._builtin_table is not None:
            _builtins._builtin_table.pop(id(wrapper), None)

    return undo


def _opened_by_torch(frame: Any) -> bool:
    """Whether the code that opened a ``no_grad`` block (``frame``) is torch's own: a file of
    the torch package, or torch's ``@no_grad()`` decorator around a function of torch's."""
    file = frame.f_code.co_filename
    if not file.startswith(_TORCH_DIR):
        return False
    if file != _DECORATOR_FILE:
        return True
    function = frame.f_locals.get("func")  # decorate_context's wrapped function
    code = getattr(inspect.unwrap(function), "__code__", None) if callable(function) else None
    return code is not None and code.co_filename.startswith(_TORCH_DIR)


#: torch warns at every call of a compiled module while any global module hook is installed
#: (the hooks also fire for its ``OptimizedModule`` wrapper): here the hooks are the profiler's,
#: which records the wrapper as the compiled region's node, so the warning is noise to the user
_COMPILE_HOOK_WARNING = r"Using `torch\.compile\(module\)` when there are global hooks on modules"


def _quiet_compile_hook_warning() -> Callable[[], None]:
    """Ignore torch's warning about global hooks on compiled modules while the profiler's
    hooks are installed; returns the undo (removes exactly that filter).

    Example:
        >>> import warnings
        >>> undo = _quiet_compile_hook_warning()
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.warn("Using `torch.compile(module)` when there are global hooks on modules")
        >>> undo(); seen
        []
    """
    warnings.filterwarnings("ignore", message=_COMPILE_HOOK_WARNING, category=UserWarning)
    entry = warnings.filters[0]

    def undo() -> None:
        if entry in warnings.filters:
            warnings.filters.remove(entry)
            mutated = getattr(warnings, "_filters_mutated", None)  # (CPython's registry reset)
            if mutated is not None:
                mutated()

    return undo


def _step_aside_for_disabled_hooks(switch: SavedTensorsSwitch) -> Callable[[], None]:
    """``torch.func.grad``/``vjp``/``jacrev`` open ``disable_saved_tensors_hooks``, which raises
    when any saved-tensor hooks are pushed: while the profiler's own are (the step counting
    activation bytes), wrap it so they come off for the transform and go back after (the
    transform's saved tensors are not counted). Returns the undo.

    Example:
        >>> switch = SavedTensorsSwitch(lambda t: t, lambda t: t)
        >>> undo = _step_aside_for_disabled_hooks(switch)
        >>> switch.on()
        True
        >>> with torch.autograd.graph.disable_saved_tensors_hooks("no hooks here"):
        ...     inside = switch.active
        >>> inside, switch.active
        (False, True)
        >>> switch.off(); undo()
    """
    graph = torch.autograd.graph
    original = graph.disable_saved_tensors_hooks

    @contextlib.contextmanager
    def disable_saved_tensors_hooks(error_message: str) -> Any:
        stepped = switch.active
        if stepped:
            switch.off()
            stepped = not switch.active  # (not on top: left in place, as the error will say)
        try:
            with original(error_message):
                yield
        finally:
            if stepped:
                switch.on()

    functools.update_wrapper(disable_saved_tensors_hooks, original)
    graph.disable_saved_tensors_hooks = disable_saved_tensors_hooks

    def undo() -> None:
        if graph.disable_saved_tensors_hooks is disable_saved_tensors_hooks:
            graph.disable_saved_tensors_hooks = original

    return undo


class SavedTensorsSwitch:
    """``saved_tensors_hooks`` pushed only while counting (one step), so other steps pay nothing.

    ``off()`` pops them only when they are still on top of torch's hook stack (user code such as
    ``torch.utils.checkpoint`` pushes and pops its own pairs inside a step); otherwise they stay
    until a later ``off()`` finds them on top.

    Example:
        >>> switch = SavedTensorsSwitch(lambda t: t, lambda t: t)
        >>> switch.on(), switch.active
        (True, True)
        >>> switch.off(); switch.active
        False
    """

    def __init__(self, pack: Callable, unpack: Callable) -> None:
        self._pack = pack
        self._unpack = unpack
        self._context: Any = None

    @property
    def active(self) -> bool:
        return self._context is not None

    def on(self) -> bool:
        """Push the hooks; False when torch refuses them here (inside a ``torch.func``
        transform, which disables saved-tensor hooks): nothing is counted then."""
        if self._context is None:
            context = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
            try:
                context.__enter__()
            except RuntimeError:  # "torch.func.{grad, vjp, ...} don't yet support ..."
                return False
            self._context = context
        return True

    def off(self) -> None:
        context = self._context
        if context is None or not self._on_top():
            return
        self._context = None
        context.__exit__(None, None, None)

    def _on_top(self) -> bool:
        top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
        if top is None:  # pragma: no cover - older torch: trust the caller's nesting
            return True
        pair = top(False)
        return pair is not None and pair[0] == self._pack
