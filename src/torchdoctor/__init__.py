"""torchdoctor: find out why a PyTorch step is slow, prescribe, and cure.

Public entry points are imported lazily, so ``import torchdoctor`` is cheap and a module that
is not needed is never loaded::

    import torchdoctor
    session = torchdoctor.profile(step_fn, model=model, steps=20)
"""

from __future__ import annotations

import importlib
from typing import Any

from torchdoctor import views as _views  # noqa: F401  (registers the Session views)
from torchdoctor._version import __version__

#: public name -> module that defines it. Add a line here to export a new public name.
_EXPORTS: dict[str, str] = {
    "compare": "torchdoctor.measure",
    "sweep": "torchdoctor.measure",
    "profile": "torchdoctor.collect.profile_step",
    "tune": "torchdoctor.tuning.api",
    "Profiler": "torchdoctor.collect.profiler",
    "region": "torchdoctor.collect.regions",
    "step": "torchdoctor.collect.regions",
    "sync_audit": "torchdoctor.collect.syncs",
    "Session": "torchdoctor.session",
    "advise": "torchdoctor.analyze.advice",
    "Advice": "torchdoctor.analyze.advice",
    "diff_sessions": "torchdoctor.analyze.diff",
    "write_reports": "torchdoctor.reports",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'torchdoctor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # cache: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
