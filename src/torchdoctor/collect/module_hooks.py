"""The profiler's module hooks, switched per step: global, on a few modules, counting, off.

Detailed steps hook every module call (:meth:`ModuleHooksSwitch.on`); an inference loop's
light steps hook its outermost modules alone (:meth:`~ModuleHooksSwitch.narrow`: each may
start a step); a training loop's light steps only count the outermost model calls
(:meth:`~ModuleHooksSwitch.count`: ``steps[i].model_calls``); the rest run with none.

Example:
    >>> import torch
    >>> switch = ModuleHooksSwitch(lambda m, a: None, lambda m, a, k, o=None: None)
    >>> switch.on(); switch.everywhere
    True
    >>> switch.off(); switch.active
    False
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any

from torch.nn.modules import module as _module

from torchdoctor.collect.compiled import DYNAMO_SKIPS


class _OutermostOnly:
    """``counter(module, args)`` on a call of the hooked modules made while none of theirs is
    open (:meth:`ModuleHooksSwitch.count` with ``nested``)."""

    __slots__ = ("counter", "depth")

    def __init__(self, counter: Callable[[Any, Any], None]) -> None:
        self.counter, self.depth = counter, 0

    def enter(self, module: Any, args: Any) -> None:
        self.depth += 1
        if self.depth == 1:
            self.counter(module, args)

    def leave(self, *_: Any) -> None:
        self.depth = max(0, self.depth - 1)


class ModuleHook:
    """One of the profiler's hooks on one module (:meth:`ModuleHooksSwitch.narrow`,
    :meth:`~ModuleHooksSwitch.count`): calls ``fn``. A hook on a module goes wherever the
    module goes: pickled with it (``torch.save(model)``, Lightning's checkpoint of the
    hyper-parameters that hold the model) it becomes ``(0).__init__``, a built-in that takes
    any arguments and returns None (a no-op hook: the file loads without torchdoctor); deep-
    copied with it (``copy.deepcopy(model)``: a best-model copy, an EMA) it becomes the same
    no-op, not a copy of the profiler. (As a bound method the hook pickled the profiler, which
    cannot be pickled: ``torch.save`` raised in the script.)

    Example:
        >>> import copy, pickle
        >>> hook = ModuleHook(lambda m, a: "seen")
        >>> hook(None, ()), pickle.loads(pickle.dumps(hook))(None, (), {}, 1)
        ('seen', None)
        >>> copy.deepcopy(hook)(None, ()) is None
        True
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        return getattr, (0, "__init__")

    def __deepcopy__(self, memo: dict) -> Callable:
        return (0).__init__


DYNAMO_SKIPS.append(ModuleHook.__call__)  # (collect/compiled.py)


def _built_by_torchdoctor() -> bool:
    """Whether the module registering a child now is built by torchdoctor's own code (the
    first caller outside torch and this hook: the host-speed calibration's tiny ``Sequential``,
    built during a step; seen as the script's, its calls cut 98 more steps)."""
    frame = sys._getframe(2)  # (this function's caller's caller: torch's add_module/__setattr__)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name != "torch" and not name.startswith("torch."):
            return name.startswith("torchdoctor.")
        frame = frame.f_back
    return False


class ModuleHooksSwitch:
    """The global module forward hooks, installed while on; or the same hooks on a few
    modules alone (:meth:`narrow`: every other module call takes torch's fast path).

    Example:
        >>> import torch
        >>> calls = []
        >>> switch = ModuleHooksSwitch(lambda m, a: calls.append(type(m).__name__),
        ...                            lambda m, a, k, o=None: None)
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> switch.on(); _ = net(torch.ones(2)); switch.active, switch.everywhere, calls
        (True, True, ['Sequential', 'Linear'])
        >>> switch.narrow([net]); _ = net(torch.ones(2)); switch.everywhere, calls[2:]
        (False, ['Sequential'])
        >>> switch.count([net], lambda m, a: calls.append("counted"))
        >>> _ = net(torch.ones(2)); switch.active, calls[3:]
        (False, ['counted'])
        >>> switch.off(); switch.active, len(net._forward_pre_hooks)
        (False, 0)
    """

    def __init__(self, pre: Callable, post: Callable) -> None:
        self._pre = pre
        self._post = post
        self._handles: list[Any] = []
        self._narrow: dict[int, list[Any]] = {}  # id(module) -> its handles
        self._counting: dict[int, list] = {}  # id(module) -> its counter's handles (count())
        self._counted_nested = False  # ... guarded: a call counts with none of theirs open
        self._guard: _OutermostOnly | None = None
        # modules built while profiling (they got children) and those that are parts of
        # another: the rest are the script's models, hooked with the narrowed ones (watch_new)
        self._parents: weakref.WeakSet[Any] = weakref.WeakSet()
        self._parts: weakref.WeakSet[Any] = weakref.WeakSet()
        self._models: list[Any] | None = []  # refs to the parents no module holds (None: redo)

    @property
    def active(self) -> bool:
        return bool(self._handles or self._narrow)

    @property
    def everywhere(self) -> bool:
        """The global hooks are on."""
        return bool(self._handles)

    def hooks_end_of(self, module: Any) -> bool:
        """Whether a call of ``module`` beginning now gets its post-hook (the global hooks are
        on, or ``module`` is one of the narrowed ones).

        Example:
            >>> import torch
            >>> switch, net = ModuleHooksSwitch(print, print), torch.nn.Linear(1, 1)
            >>> switch.narrow([net]); switch.hooks_end_of(net), switch.hooks_end_of(torch.nn.ReLU())
            (True, False)
            >>> switch.off()
        """
        return bool(self._handles) or id(module) in self._narrow

    def narrow(self, modules: list[Any]) -> None:
        """Hooks on ``modules`` alone. Switched inside a hook of one of them, that call still
        gets exactly one pre- and one post-hook: torch reads a call's pre-hooks before
        running them, and its forward hooks after the forward."""
        self._remove_global()
        self._remove_counting()
        wanted = {id(module): module for module in modules}
        if self._models is None:  # (redone after a build, not at every light step)
            self._models = [weakref.ref(m) for m in self._parents if m not in self._parts]
        for ref in self._models:  # (models built up front, called after this loop)
            model = ref()
            if model is not None:
                wanted.setdefault(id(model), model)
        for key in [key for key in self._narrow if key not in wanted]:
            for handle in self._narrow.pop(key):
                handle.remove()
        for key, module in wanted.items():
            if key not in self._narrow:
                self._narrow[key] = [
                    module.register_forward_pre_hook(ModuleHook(self._pre)),
                    module.register_forward_hook(
                        ModuleHook(self._post), with_kwargs=True, always_call=True
                    ),
                ]

    def watch_new(self, widen: Callable[[], None]) -> Callable[[], None]:
        """While narrowed, call ``widen()`` whenever a module gets a child (``__setattr__``,
        ``add_module``: a model being built); returns the undo. An inference script that builds
        a second model after its first loop (a classification pipeline, then a NER one) calls
        it outermost with only the first model's hooks on: no hook saw its calls, no step began,
        and its whole run was the last step's "work after the loop". ``widen`` decides whether
        to hook every module now (the profiler: when no module call is open).

        Models torchdoctor builds itself are not the script's (its host-speed calibration,
        during a step): this example's, built in a torchdoctor module, are left alone.

        Example:
            >>> import torch
            >>> switch, seen = ModuleHooksSwitch(print, print), []
            >>> undo = switch.watch_new(lambda: seen.append("new"))
            >>> switch.narrow([torch.nn.ReLU()])
            >>> _ = torch.nn.Sequential(torch.nn.Linear(1, 1)); seen
            []
            >>> undo(); switch.off()
        """

        def registered(parent: Any, name: str, child: Any) -> None:
            self._parents.add(parent)
            self._parts.add(child)
            self._models = None
            if self._narrow and not self._handles and not _built_by_torchdoctor():
                widen()

        # (never removed while torch runs these hooks: it iterates their dict itself)
        return _module.register_module_module_registration_hook(registered).remove

    def built(self) -> list[Any]:
        """The modules built while profiling that got children, the script's models (no
        module's part) first, then their parts (``watch_new``)."""
        parents = list(self._parents)
        return [m for m in parents if m not in self._parts] + list(self._parts)

    def count(
        self, modules: list[Any], counter: Callable[[Any, Any], None], nested: bool = False
    ) -> None:
        """No recording hooks; ``counter(module, args)`` alone on ``modules`` (a pre-hook
        each): a training loop's light steps count their outermost model calls (an evaluation
        between steps makes many) at one call's worth, and every other call takes torch's
        fast path. Not :attr:`active`: nothing is recorded. ``nested``: one of them also runs
        inside another (minimalRL's DQN: ``fc1`` outermost in ``self.forward(obs)``, a child
        of the Q-network in ``train()``): a call counts only when none of theirs is open (a
        forward hook each closes it).

        Example:
            >>> import torch
            >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
            >>> switch, calls = ModuleHooksSwitch(print, print), []
            >>> switch.count([net, net[0]], lambda m, a: calls.append(type(m).__name__), True)
            >>> _ = net(torch.ones(1, 2)), net[0](torch.ones(1, 2))
            >>> switch.off(); calls
            ['Sequential', 'Linear']
        """
        self._remove_global()
        self._remove_narrow()
        if nested != self._counted_nested:  # (hooks of the other kind: all anew)
            self._remove_counting()
            self._counted_nested = nested
        guard = self._guard = self._guard or _OutermostOnly(counter)  # (one for all of them:
        guard.depth = 0  # its depth is theirs together; a step begins with no call open)
        wanted = {id(module): module for module in modules}
        for key in [key for key in self._counting if key not in wanted]:
            for handle in self._counting.pop(key):
                handle.remove()
        for key, module in wanted.items():
            if key in self._counting:
                continue
            if not nested:
                self._counting[key] = [module.register_forward_pre_hook(ModuleHook(counter))]
                continue
            self._counting[key] = [
                module.register_forward_pre_hook(ModuleHook(guard.enter)),
                module.register_forward_hook(ModuleHook(guard.leave), always_call=True),
            ]

    def on(self) -> None:
        self._remove_narrow()
        self._remove_counting()
        if not self._handles:
            self._handles = [
                _module.register_module_forward_pre_hook(self._pre),
                _module.register_module_forward_hook(
                    self._post, with_kwargs=True, always_call=True
                ),
            ]

    def off(self) -> None:
        self._remove_global()
        self._remove_narrow()
        self._remove_counting()

    def _remove_counting(self) -> None:
        counting, self._counting = self._counting, {}
        self._guard = None
        for handles in counting.values():
            for handle in handles:
                handle.remove()

    def _remove_global(self) -> None:
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def _remove_narrow(self) -> None:
        narrow, self._narrow = self._narrow, {}
        for handles in narrow.values():
            for handle in handles:
                handle.remove()
