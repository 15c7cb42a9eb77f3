"""Modules whose class defines its own ``__call__``: their ``forward`` runs without
``nn.Module.__call__``, so no module hook (the profiler's included) sees them.

gpytorch's ``Module.__call__`` calls ``forward`` directly (clients round 21): an exact GP's
model, its kernels, its likelihood and its marginal log likelihood never appear in the tree,
and their whole time is the step's (self) row; only the plain torch modules they call
(a ``Softplus`` constraint) show. The session says so instead of leaving an empty tree to be
read as "no model". torch's own wrappers (``torch.compile``'s ``OptimizedModule``) are not
meant: they call the module they wrap, whose hooks run.

Example:
    >>> import torch
    >>> class Lib(torch.nn.Module):
    ...     def __call__(self, x):
    ...         return self.forward(x)
    >>> class GP(Lib):
    ...     def forward(self, x):
    ...         return x
    >>> "so the tree cannot show them: GP (" in unhooked_note([GP(), torch.nn.Linear(1, 1)])
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

#: the most class names a note lists
MAX_NAMED = 3
#: names a ``__call__`` that passes the call on to its base class's uses
_FORWARDS = frozenset(("super", "__call__", "_call_impl", "_wrapped_call_impl"))


def own_call(module: Any) -> type | None:
    """The class whose ``__call__`` runs ``module``'s forward itself (the first in its MRO
    that does not pass the call on to its base's), when it is not ``nn.Module`` nor a class
    of torch's own, else None.

    Example:
        >>> own_call(torch.nn.Linear(1, 1)) is None
        True
    """
    for cls in type(module).__mro__:
        if "__call__" in vars(cls):
            if cls is torch.nn.Module or cls.__module__.split(".")[0] == "torch":
                return None
            code = getattr(vars(cls)["__call__"], "__code__", None)
            if code is None or not _FORWARDS.intersection(code.co_names):
                return cls
            # (it passes the call on: Pyro's PyroModule, super().__call__ in its context;
            # gpytorch's ExactGP to gpytorch's Module, which calls forward itself)
    return None


def unhooked_note(modules: Iterable[Any]) -> str | None:
    """The session note naming the modules (first ones first: the script's models) whose
    class defines its own ``__call__``, or None when there is none."""
    names: dict[str, type] = {}
    for module in modules:
        cls = own_call(module)
        if cls is not None:
            names.setdefault(type(module).__name__, cls)
    if not names:
        return None
    shown = list(names)[:MAX_NAMED]
    packages = sorted({c.__module__.split(".")[0] for c in names.values()})
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return (
        "modules whose class defines its own __call__ run their forward without nn.Module's "
        f"hooks, so the tree cannot show them: {', '.join(shown)}{more} ({', '.join(packages)}); "
        "their time is in the (self) rows and the hot lines (torchdoctor.region names parts)"
    )
