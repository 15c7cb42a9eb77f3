"""Install and remove everything the profiler hooks into, exception-safely.

Installed while a profiler runs, removed on every exit path (each removal is attempted even if
another fails):

- global module forward pre-hook and forward hook (``always_call=True``);
- global optimizer step pre- and post-hooks (phase ``optimizer``, step boundaries);
- wrappers around ``torch.autograd.backward`` and ``torch.autograd.grad`` (phase ``backward``);
- a ``saved_tensors_hooks`` pair counting activation bytes (entered last, exited first).

Example:
    >>> import torch
    >>> from torch.nn.modules import module
    >>> before = len(module._global_forward_hooks)
    >>> hooks = Installation()
    >>> hooks.add_module_hooks(lambda m, a: None, lambda m, a, o: None)
    >>> hooks.remove()
    >>> len(module._global_forward_hooks) == before
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.modules import module as _module
from torch.optim import optimizer as _optimizer


class Installation:
    """A stack of undo actions; :meth:`remove` runs them all, newest first."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def add_module_hooks(self, pre: Callable, post: Callable) -> None:
        pre_handle = _module.register_module_forward_pre_hook(pre)
        self._undo.append(pre_handle.remove)
        post_handle = _module.register_module_forward_hook(post, always_call=True)
        self._undo.append(post_handle.remove)

    def add_optimizer_hooks(self, pre: Callable, post: Callable) -> None:
        pre_handle = _optimizer.register_optimizer_step_pre_hook(pre)
        self._undo.append(pre_handle.remove)
        post_handle = _optimizer.register_optimizer_step_post_hook(post)
        self._undo.append(post_handle.remove)

    def wrap_autograd(self, enter: Callable[[], None], leave: Callable[[], None]) -> None:
        """Call ``enter``/``leave`` around every ``torch.autograd.backward`` and ``grad``."""
        for name in ("backward", "grad"):
            original = getattr(torch.autograd, name)

            @functools.wraps(original)
            def wrapper(*args: Any, _target=original, **kwargs: Any) -> Any:
                enter()
                try:
                    return _target(*args, **kwargs)
                finally:
                    leave()

            setattr(torch.autograd, name, wrapper)
            self._undo.append(functools.partial(setattr, torch.autograd, name, original))

    def add_saved_tensors_hooks(self, pack: Callable, unpack: Callable) -> None:
        context = torch.autograd.graph.saved_tensors_hooks(pack, unpack)
        context.__enter__()
        self._undo.append(lambda: context.__exit__(None, None, None))

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
