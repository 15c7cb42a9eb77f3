"""The modules an inference loop calls outermost, hooked alone in its light steps.

When steps are cut at outermost module calls (an inference loop under ``run``), light steps
still need those calls: each one may start a step (``collect.rounds``) and opens the forward
phase. Global module hooks would also run on every submodule call (a tiny Whisper decoding
step: 36 calls for 1 outermost, torch's slow path and two hook calls each, ~10% of a 1.7 ms
step); hooks on the outermost modules alone cost one call's worth. :class:`OutermostModules`
remembers the modules seen called outermost (by the global hooks, in warm-up and detailed
steps); it gives none (hook every module) when one of them also runs inside another module
(a child hooked alone would look outermost there) or when a loop makes new top-level modules
all the time, or one is a TorchScript module (torch refuses hooks on one of those).

Example:
    >>> import torch
    >>> outer = OutermostModules()
    >>> net = torch.nn.Linear(2, 2)
    >>> outer.saw(net), outer.saw(net)  # (new the first time)
    (True, False)
    >>> outer.for_light_steps(node_ids={(0, id(net)): 1}, kind=["root", "module"]) == [net]
    True
"""

from __future__ import annotations

import weakref
from typing import Any

from torch.jit import ScriptModule

#: distinct outermost modules remembered at most; past it, light steps hook every module
MAX_OUTERMOST = 16


class OutermostModules:
    """Modules seen called outermost (see the module docstring).

    Example:
        >>> import torch
        >>> outer, net = OutermostModules(), torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> _ = outer.saw(net[0])  # outermost once (called on its own)...
        >>> outer.for_light_steps({(1, id(net[0])): 2}, ["root", "module", "module"]) is None
        True
    """

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref] = {}
        self._too_many = False
        self._nodes_checked = 0  # len(node_ids) when nesting was last checked
        self._nested = False

    def saw(self, module: Any) -> bool:
        """``module`` was called outermost; True the first time (while it keeps count)."""
        key = id(module)
        if key in self._refs or self._too_many:
            return False
        if len(self._refs) >= MAX_OUTERMOST:
            self._too_many = True
            return False
        if isinstance(module, ScriptModule):  # (torch refuses hooks on one module of these:
            self._too_many = True  # the global hooks, which it runs, see its calls)
            return True
        try:
            self._refs[key] = weakref.ref(module)
        except TypeError:  # (no weak reference: never hooked alone)
            self._too_many = True
        self._nodes_checked = 0  # (a new one: check its nesting again)
        return True

    def for_light_steps(self, node_ids: dict[tuple[int, int], int], kind: list[str]) -> list | None:
        """The live modules to hook alone, or None to hook every module. ``node_ids``: the
        recorder's (parent node, module id) -> node; ``kind``: per node, "module" or "region"
        (a module under a region is still outermost)."""
        if self._too_many or not self._refs or self._nested_in(node_ids, kind):
            return None
        return self._alive()

    def for_counting(
        self, node_ids: dict[tuple[int, int], int], kind: list[str]
    ) -> tuple[list, bool] | None:
        """The live modules whose calls a training loop's light steps count, and whether one
        of them also runs inside another (then a call counts only with none of theirs open:
        ``ModuleHooksSwitch.count``); None when there are none to hook alone.

        Example:
            >>> import torch
            >>> outer, net = OutermostModules(), torch.nn.Sequential(torch.nn.Linear(2, 2))
            >>> _ = outer.saw(net), outer.saw(net[0])  # (DQN's `self.forward(obs)`: fc1 alone)
            >>> modules, nested = outer.for_counting({(0, id(net)): 1, (1, id(net[0])): 2},
            ...                                      ["root", "module", "module"])
            >>> len(modules), nested
            (2, True)
        """
        if self._too_many or not self._refs:
            return None
        alive = self._alive()
        return (alive, self._nested_in(node_ids, kind)) if alive else None

    def _nested_in(self, node_ids: dict[tuple[int, int], int], kind: list[str]) -> bool:
        """Whether one of the modules runs inside another module (checked again only when
        the recorder has new nodes: nodes are only added)."""
        if len(node_ids) != self._nodes_checked:
            self._nodes_checked = len(node_ids)
            refs = self._refs
            self._nested = any(
                parent and kind[parent] == "module" and module in refs
                for parent, module in node_ids
            )
        return self._nested

    def _alive(self) -> list | None:
        alive = [module for ref in self._refs.values() if (module := ref()) is not None]
        return alive or None


def in_eval_mode(module: Any) -> bool:
    """Whether an outermost call runs the model in eval mode: the module is, or, for a wrapper
    in training mode (a loss module holding the model: sentence-transformers' losses, which
    Trainer.evaluate leaves in training mode when it calls ``model.eval()``), every child with
    parameters or children of its own is (losses and activations without them do not count).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))
        >>> wrapper = torch.nn.ModuleDict({"model": model, "loss": torch.nn.MSELoss()})
        >>> in_eval_mode(wrapper), in_eval_mode(model.eval()), in_eval_mode(wrapper)
        (False, True, True)
    """
    if not getattr(module, "training", True):
        return True
    children = getattr(module, "_modules", None)
    held = [child for child in (children or {}).values()
            if child is not None and (child._parameters or child._modules)]  # fmt: skip
    return bool(held) and not any(child.training for child in held)
