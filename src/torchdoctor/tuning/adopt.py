"""A trial's outermost modules get a subclass whose ``__call__`` is the trial's.

The trial (``tuning/harness.py``) marks steps, applies the knobs' ``around_call`` and
``on_inputs`` and records the outputs around each outermost call, outside any compiled region
(``module.compile()`` compiles ``_call_impl`` underneath ``__call__``). The subclass keeps the
script's class's name, and the model still saves, loads and copies as that class: its
``__reduce_ex__`` names the original class and ``__class__`` reads as it (pickle checks one
against the other), so ``torch.save(model)``, ``copy.deepcopy(model)`` (an EMA) and a
``weights_only`` load that allows the class work as without the trial.

Example:
    >>> import copy, torch
    >>> net = torch.nn.Linear(2, 2)
    >>> adopt(net, lambda module, call, args, kwargs: "seen")
    True
    >>> net(torch.ones(1, 2)), net.__class__ is torch.nn.Linear, type(net) is torch.nn.Linear
    ('seen', True, False)
    >>> type(copy.deepcopy(net)) is torch.nn.Linear
    True
"""

from __future__ import annotations

import copyreg
from collections.abc import Callable
from typing import Any

#: ``object.__class__``'s descriptor: assigning it still swaps an adopted module's class back
_OBJECT_CLASS = object.__dict__["__class__"]


def adopt(module: Any, call_root: Callable[[Any, Any, tuple, dict], Any]) -> bool:
    """Give ``module`` a subclass whose ``__call__`` is ``call_root(module, base_call, args,
    kwargs)``; False when its class cannot be swapped (an unusual metaclass, ``__slots__``)."""
    cls = type(module)

    def __call__(inner: Any, *args: Any, **kwargs: Any) -> Any:
        return call_root(inner, cls.__call__, args, kwargs)

    def __reduce_ex__(inner: Any, protocol: Any) -> Any:
        return copyreg.__newobj__, (cls,), inner.__getstate__()

    namespace = {"__call__": __call__, "_td_base_call": cls.__call__,
                 "__reduce_ex__": __reduce_ex__,
                 "__class__": property(lambda inner: cls, _OBJECT_CLASS.__set__),
                 "__module__": cls.__module__, "__qualname__": cls.__qualname__}  # fmt: skip
    try:
        module.__class__ = type(cls.__name__, (cls,), namespace)
    except TypeError:
        return False
    return True
