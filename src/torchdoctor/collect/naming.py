"""Qualified paths and source locations of modules seen by the profiler.

With ``model`` given, its submodules are named as ``model.named_modules()`` names them
(``decoder.layers.3.cross_attn``) and the model itself by its class name. With ``model=None``
the first outermost module called plays that role; any other outermost module is named by its
class name and its submodules are prefixed with it (``CrossEntropyLoss``, ``Head.proj``).
A module nobody registered (created on the fly inside a forward) is named after its caller:
``<caller path>.<ClassName>``.

Example:
    >>> import torch
    >>> names = ModuleNames()
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> names.register_root(net)
    'Sequential'
    >>> names.path_of(net[0], None)
    '0'
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any

from torchdoctor.collect.compiled import is_compiled_module
from torchdoctor.session_read import TORCHSCRIPT

_SOURCE_CACHE: dict[type, dict[str, Any] | None] = {}


def source_of_code(where: Any) -> dict[str, Any] | None:
    """File, line and function of a frame (its current line) or a function (its first line);
    None for anything else.

    Example:
        >>> def f():
        ...     pass
        >>> source_of_code(f)["function"], source_of_code(42)
        ('f', None)
    """
    code = getattr(where, "f_code", None) or getattr(where, "__code__", None)
    if code is None:
        return None
    line = getattr(where, "f_lineno", None) or code.co_firstlineno
    return {"file": code.co_filename, "line": line, "end_line": line, "function": code.co_name}


def type_name(module: Any) -> str:
    """A module's class name as the tree shows it: a TorchScript module (``torch.jit.script``,
    ``torch.jit.load``) is a ``RecursiveScriptModule`` whatever it was; it reads as its original
    class, marked (its sub-modules run inside it, where no hook sees them).

    Example:
        >>> import torch
        >>> type_name(torch.nn.Linear(2, 2)), type_name(torch.jit.script(torch.nn.Linear(2, 2)))
        ('Linear', 'Linear (TorchScript)')
    """
    cls = type(module)
    original = getattr(module, "original_name", None) if _is_script(cls) else None
    return f"{original}{TORCHSCRIPT}" if isinstance(original, str) else cls.__name__


def _is_script(cls: type) -> bool:
    return any(base.__name__ == "ScriptModule" and base.__module__.startswith("torch.jit")
               for base in cls.__mro__)  # fmt: skip


def source_of_class(cls: type) -> dict[str, Any] | None:
    """File and line range of ``cls.forward`` (cached per class); None when unavailable.

    Example:
        >>> import torch
        >>> source_of_class(torch.nn.Linear)["function"]
        'forward'
    """
    if cls in _SOURCE_CACHE:
        return _SOURCE_CACHE[cls]
    result = None
    forward = getattr(cls, "forward", None)
    try:
        function = inspect.unwrap(forward)
        lines, start = inspect.getsourcelines(function)
        result = {
            "file": inspect.getsourcefile(function),
            "line": start,
            "end_line": start + len(lines) - 1,
            "function": getattr(function, "__name__", "forward"),
        }
    except (TypeError, OSError):
        result = None
    _SOURCE_CACHE[cls] = result
    return result


class ModuleNames:
    """Maps module objects to qualified paths; registers roots as they are first seen.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
        >>> names = ModuleNames()
        >>> names.register_root(model), names.path_of(model[0], caller=None)
        ('Sequential', '0')
        >>> names.path_of(torch.nn.GELU(), caller="0")
        '0.GELU'
    """

    def __init__(self) -> None:
        self._paths: dict[int, str] = {}
        self._keep: list[Any] = []  # (modules without weak references: held, ids unique)
        self._refs: dict[int, Any] = {}  # id -> a weak reference to the module named there
        #: ids of named modules freed since the recorder last read them (a later module may
        #: take one): only appended to, as a garbage collection may free a module anywhere
        self.freed: list[int] = []
        self._root_names: set[str] = set()
        self._roots: dict[int, str] = {}  # id of each root -> its name
        self._root_of: dict[int, int] = {}  # id of a module -> id of the root that named it
        self._main: int | None = None  # id of the main root (its children are unprefixed)
        self._hints: dict[int, str] = {}  # id of a root -> the variable that holds it
        self.has_main = False
        #: grows each time modules named earlier are renamed (a root adopted by a later one)
        self.generation = 0

    def register_root(
        self, module: Any, *, main: bool = True, hint: str | None = None, name: str | None = None
    ) -> str:
        """Name ``module`` and its submodules; the main root's children get unprefixed paths.
        The wrapper ``torch.compile(model)`` returns is named ``OptimizedModule`` and ``model``
        is registered as a root of its own, so its modules keep the names an eager run gives
        them (not ``_orig_mod.…``).

        A root that contains modules named earlier as (or under) a root of their own adopts
        them: a model that runs a submodule in its ``__init__`` (a shape probe, a weight
        parametrization) made that submodule the first outermost call, so ``Sequential`` /
        ``0`` become ``features`` / ``features.0`` once the model itself is called; the main
        root's role passes to the adopting root. :attr:`generation` tells callers to re-read
        paths. ``hint``: the name of a variable holding the module in the calling code; a root
        whose class another root already has is named by it (and that root by its own).
        ``name``: the root's name, whatever its class (a model never called itself, whose items
        the script calls one by one, by its variable: ``model.0``, ``model.1``).

        Example:
            >>> import torch
            >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2))
            >>> names = ModuleNames()
            >>> names.register_root(torch.compile(model)), names.path_of(model[0], caller=None)
            ('OptimizedModule', '0')
            >>> outer = torch.nn.ModuleDict({"features": torch.nn.Sequential(torch.nn.ReLU())})
            >>> names = ModuleNames()
            >>> names.register_root(outer["features"]), names.path_of(outer["features"][0], None)
            ('Sequential', '0')
            >>> names.register_root(outer), names.path_of(outer["features"][0], None)
            ('ModuleDict', 'features.0')
            >>> names, teacher, student = ModuleNames(), torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
            >>> names.register_root(teacher, hint="teacher"), names.register_root(student, hint="student")
            ('Linear', 'student')
            >>> names.path_of(teacher, None)  # renamed when the second Linear came
            'teacher'
        """
        inner = getattr(module, "_orig_mod", None) if is_compiled_module(module) else None
        subs = list(module.named_modules())
        for _, sub in subs:  # (an id a freed module had names nothing now)
            self._seen(sub)
        if inner is not None and id(inner) not in self._paths:
            self.register_root(inner, main=main)
            main = False
        inside = {id(sub) for _, sub in subs}
        adopted = {
            root for root in self._roots if root in inside and root not in (id(module), id(inner))
        }  # (a compiled wrapper leaves its model the root it is)
        for root in adopted:
            self._root_names.discard(self._roots.pop(root))
        if self._main in adopted:  # the adopting root takes the main root's place
            self.has_main, self._main, main = False, None, True
        name = name or type_name(module)
        if hint:
            self._hints[id(module)] = hint
            held = [other for other in self._roots if self._hints.get(other) == hint]
            if held:  # the variable held a model before (a trial loop's `net` each trial):
                if hint not in self._root_names:  # the first is renamed after it, this
                    self._rename_root(held[0], hint)  # one numbered (net, net#2, ...)
                name = hint
        if name in self._root_names:
            # two roots of one class (a teacher and its student, G and D): named by the
            # variables that hold them in the script when it has them, else numbered
            for other, other_name in list(self._roots.items()):
                other_hint = self._hints.get(other)
                if other_name == name and other_hint and other_hint not in self._root_names:
                    self._rename_root(other, other_hint)
            if hint and hint not in self._root_names:
                name = hint
        if name in self._root_names:
            index = 2
            while f"{name}#{index}" in self._root_names:
                index += 1
            name = f"{name}#{index}"
        self._root_names.add(name)
        self._roots[id(module)] = name
        prefix = "" if main and not self.has_main else name + "."
        if main and not self.has_main:
            self.has_main, self._main = True, id(module)
        renamed: dict[str, str] = {}
        for sub_name, sub in subs:
            key = id(sub)
            old = self._paths.get(key)
            if old is not None and self._root_of.get(key) not in adopted:
                continue  # named by another root (a module shared between models)
            path = name if sub_name == "" else prefix + sub_name
            if old is not None and old != path:
                renamed[old] = path
            self._paths[key] = path
            self._root_of[key] = id(module)
            self._hold(sub)
        if renamed:  # modules made on the fly were named after their (renamed) caller
            for key, path in list(self._paths.items()):
                if key not in inside:
                    head = path.rsplit(".", 1)[0]
                    if head in renamed and "." in path:
                        self._paths[key] = f"{renamed[head]}.{path.rsplit('.', 1)[1]}"
            self.generation += 1
        return name

    def _rename_root(self, root: int, new: str) -> None:
        """Give a root and the modules it named another root name (``root``: its id)."""
        old = self._roots[root]
        self._root_names.discard(old)
        self._root_names.add(new)
        self._roots[root] = new
        for key, path in list(self._paths.items()):
            if self._root_of.get(key) == root:
                if path == old:
                    self._paths[key] = new
                elif path.startswith(old + "."):
                    self._paths[key] = new + path[len(old) :]
        self.generation += 1

    def known_path(self, module_id: int) -> str | None:
        """The path of the module with this ``id`` (None: never named).

        Example:
            >>> import torch
            >>> names, net = ModuleNames(), torch.nn.Sequential(torch.nn.ReLU())
            >>> names.register_root(net), names.known_path(id(net[0])), names.known_path(0)
            ('Sequential', '0', None)
        """
        return self._paths.get(module_id)

    def path_of(self, module: Any, caller: str | None) -> str:
        """The path of ``module``; unknown modules are registered (as roots when no caller)."""
        path = self.known(module)
        if path is not None:
            return path
        if caller is None:
            self.register_root(module)
            return self._paths[id(module)]
        path = f"{caller}.{type_name(module)}"
        self._paths[id(module)] = path
        self._hold(module)
        return path

    def known(self, module: Any) -> str | None:
        """The path of ``module`` (None: never named; a module freed since, whose id it took,
        named nothing for it).

        Example:
            >>> import torch
            >>> names, net = ModuleNames(), torch.nn.Sequential(torch.nn.ReLU())
            >>> names.register_root(net), names.known(net[0]), names.known(torch.nn.ReLU())
            ('Sequential', '0', None)
        """
        self._seen(module)
        return self._paths.get(id(module))

    def _hold(self, module: Any) -> None:
        """Name ``module`` by its id while it lives, without keeping it alive: a model copied
        anew each step (``copy.deepcopy``: a per-task copy, a target network's refresh) was
        held for the whole run, every copy's weights with it (a MAML-by-copy run grew 300 MB
        in 200 steps). Its names stay (a later model of its variable renames it: ``net``,
        ``net#2``) until a new module takes its id (:meth:`_seen`)."""
        key = id(module)
        try:
            self._refs[key] = weakref.ref(module)
            weakref.finalize(module, self._freed, key).atexit = False
        except TypeError:  # (no weak references: held for the run, its id unique)
            self._keep.append(module)

    def _freed(self, key: int) -> None:
        self.freed.append(key)

    def _seen(self, module: Any) -> None:
        """Drop what the id of ``module`` named when a freed module had it (ids are reused);
        a root's name stays taken (the next model of its variable is numbered on)."""
        key = id(module)
        ref = self._refs.get(key)
        if ref is not None and ref() is not module:
            del self._refs[key]
            self._paths.pop(key, None)
            self._root_of.pop(key, None)
            self._roots.pop(key, None)
            self._hints.pop(key, None)
