"""Run a module as ``python -m NAME`` would: find it (a package runs its ``__main__``, the
current directory first on ``sys.path``) and load its source as a script with its spec, so
:func:`~torchdoctor.collect.script.run_script` gives it ``__spec__`` and ``__package__``
(relative imports work) and puts the current directory first on ``sys.path``.

Where a script path is expected (``tune``'s trial specs), a module is written ``"-m NAME"``:
:func:`load_target` loads either.

Example:
    >>> load_target("-m json.tool").spec.name
    'json.tool'
"""

from __future__ import annotations

import os
import sys
from typing import Any

from torchdoctor.collect.script import LoadedScript, ScriptNotFoundError, load_script


def load_module(name: str, step_fn: str | None = None) -> LoadedScript:
    """Find a module as ``python -m NAME`` does (a package runs its ``__main__``), from the
    current directory first; then as :func:`load_script` on its source file.

    Raises :class:`ScriptNotFoundError` naming what was looked for.

    Example:
        >>> loaded = load_module("json.tool")
        >>> loaded.spec.name, loaded.path.endswith("tool.py")
        ('json.tool', True)
    """
    if not name or name.startswith(".") or not all(p.isidentifier() for p in name.split(".")):
        raise ScriptNotFoundError(
            f"-m {name!r}: expected a dotted module name, as in `torchdoctor run -m pkg.train`"
        )
    saved = sys.path[:]
    sys.path.insert(0, os.getcwd())  # as `python -m` does: the current directory first
    try:
        spec = _find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = _find_spec(f"{name}.__main__")
            if spec is None:
                raise ScriptNotFoundError(
                    f"-m {name}: {name} is a package without a __main__ module; name the "
                    f"module to run inside it (`-m {name}.train`)"
                )
    finally:
        sys.path[:] = saved
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        raise ScriptNotFoundError(
            f"-m {name}: no module named {name!r} from {os.getcwd()} or sys.path (a compiled or "
            "built-in module cannot be profiled); expected an importable Python module"
        )
    loaded = load_script(spec.origin, step_fn)
    loaded.spec, loaded.given = spec, spec.origin
    return loaded


#: how a module target is written where a script path is expected (``tune -m pkg.train``)
MODULE_PREFIX = "-m "


def load_target(target: str, step_fn: str | None = None) -> LoadedScript:
    """:func:`load_module` for ``"-m NAME"``, else :func:`load_script` for a path.

    Example:
        >>> load_target("-m json.tool").spec.name
        'json.tool'
    """
    if target.startswith(MODULE_PREFIX):
        return load_module(target[len(MODULE_PREFIX) :].strip(), step_fn)
    return load_script(target, step_fn)


def absolute_target(target: str) -> str:
    """A target with its path made absolute (a module name stays as it is).

    Example:
        >>> absolute_target("-m pkg.train"), os.path.isabs(absolute_target("train.py"))
        ('-m pkg.train', True)
    """
    return target if target.startswith(MODULE_PREFIX) else os.path.abspath(target)


def _find_spec(name: str) -> Any:
    import importlib.util

    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError) as error:  # a parent package that fails to import
        raise ScriptNotFoundError(f"-m {name}: {type(error).__name__}: {error}") from error
