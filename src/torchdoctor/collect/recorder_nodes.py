"""The recorder's node registry: modules and regions as nodes of the call-context tree.

The half of :class:`~torchdoctor.collect.recorder.Recorder` that names what it records: a node
is a module path or region name *under its caller* (a module reused from two places appears
under each). Modules are named by :class:`~torchdoctor.collect.naming.ModuleNames`; when it
renames modules (a root adopted by a later one) every node's path is re-read. A module made on
the fly inside a forward (or a stateless one made per step in the loop) is one node per class
under its caller, not one per instance; a module called as an outermost call from a method of
the module that owns it (a LightningModule's ``training_step``) is named by that owner.

Example:
    >>> from torchdoctor.collect.clocks import CpuClock
    >>> from torchdoctor.collect.recorder import Recorder
    >>> rec = Recorder(CpuClock())
    >>> rec.node_for(0, ("region", "x"), "x", "region", None, None, name="x")
    1
    >>> rec.name[1], rec.kind[1]
    ('x', 'region')
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from torchdoctor.collect.assemble import parameter_count
from torchdoctor.collect.compiled import is_compiled_module
from torchdoctor.collect.engine_state import attention_switch
from torchdoctor.collect.lines_frames import USER, kind_of_file
from torchdoctor.collect.naming import ModuleNames, source_of_class, type_name

_host_ns = time.perf_counter_ns



class NodeStates(dict):
    """Per module node, the module's parameters and buffers (the input fingerprints read their
    versions: an update between two calls is new work), held while the module lives. A module
    made anew each step (a per-task copy, ``copy.deepcopy(model)``) is let go when it is freed
    (:meth:`NodeRegistry.forget_freed`), its parameter count kept (:meth:`counts`): held, every
    copy's weights stayed, and a MAML-by-copy run grew 300 MB in 200 steps.

    Example:
        >>> states = NodeStates()
        >>> states.hold(1, torch.nn.Linear(3, 2))
        >>> len(states[1]), states.counts()
        (2, {1: 8})
        >>> states.let_go([1])
        >>> 1 in states, states.counts()
        (False, {1: 8})
    """

    def __init__(self) -> None:
        super().__init__()
        self.dead_counts: dict[int, int] = {}

    def hold(self, node: int, module: Any) -> None:
        """Hold ``module``'s state as ``node``'s (until :meth:`let_go`)."""
        self[node] = (*module.parameters(), *module.buffers())

    def let_go(self, nodes: Any) -> None:
        """The modules of ``nodes`` were freed: keep their parameter counts, not their state."""
        for node in nodes:
            state = self.pop(node, None)
            if state is not None:
                self.dead_counts[node] = parameter_count(state)

    def counts(self) -> dict[int, int]:
        """Parameter elements per node, of the modules alive and of those freed."""
        return {**self.dead_counts, **{node: parameter_count(s) for node, s in self.items()}}


class NodeRegistry:
    """Node ids -> parent, path, name, kind, type, source (lists indexed by node id).

    Example:
        >>> from torchdoctor.collect.clocks import CpuClock
        >>> from torchdoctor.collect.recorder import Recorder
        >>> rec, net = Recorder(CpuClock()), torch.nn.Sequential(torch.nn.Linear(1, 1))
        >>> node = rec._module_node(0, net)
        >>> rec.path[node], rec.type[node], rec.library[node]
        ('Sequential', 'Sequential', True)
    """

    names: ModuleNames
    node_ids: dict[tuple[int, Any], int]
    module_nodes: dict[int, int]
    phases: Any
    parent: list[int]
    path: list[str]
    name: list[str]
    kind: list[str]
    type: list[str | None]
    source: list[dict | None]
    library: list[bool]
    state_of: NodeStates
    freed_keys: dict[int, int]
    made_in_forward: set[int]
    registration_ns: int
    compiled_module_seen: bool
    compiled_inner: set[int]
    _names_generation: int

    def node_for(
        self,
        parent: int,
        key: Any,
        path: str,
        kind: str,
        type_name: str | None,
        source: Any,
        *,
        name: str | None = None,
    ) -> int:
        """Register a node (``key`` identifies it under ``parent``) and return its id; its name
        is ``name``, by default the last part of ``path``."""
        node = len(self.parent)
        self.node_ids[(parent, key)] = node
        self.parent.append(parent)
        self.path.append(path)
        self.name.append(name if name is not None else path.rsplit(".", 1)[-1])
        self.kind.append(kind)
        self.type.append(type_name)
        self.source.append(source)
        file = (source or {}).get("file") if kind == "module" else None
        self.library.append(kind == "module" and (not file or kind_of_file(str(file)) != USER))
        return node

    def forget_freed(self) -> None:
        """Freed modules' ids name no node now: a module made later may take one (a per-task
        copy made each step) and must not be taken for the freed one. Their nodes keep the id
        (``freed_keys``) while no module has it, for a renaming of their paths, and let go of
        their state. Read at safe points (a module's registration, the step's start), never
        inside a garbage collection (``ModuleNames.freed`` is only appended to)."""
        freed, self.names.freed = self.names.freed, []
        if not freed:
            return
        keys = set(freed)
        for pair in [k for k in self.node_ids if k[1] in keys]:
            self.freed_keys[self.node_ids.pop(pair)] = pair[1]
        for key in keys:
            self.module_nodes.pop(key, None)
        self.state_of.let_go(node for node, key in self.freed_keys.items() if key in keys)

    def _module_node(self, parent: int, module: Any) -> int:
        began = _host_ns()
        self.forget_freed()
        try:
            if not parent and self.phases.stack[-1][0] == "backward":
                # a checkpointed module's forward re-run in backward, outside its caller's
                # frame: the node of its call in forward (its recomputation is that node's)
                known = self.module_nodes.get(id(module))
                if known is not None:
                    return known
            node = self._register_module(parent, module)
            self.module_nodes.setdefault(id(module), node)
            return node
        finally:
            self.registration_ns += _host_ns() - began

    def _enclosing_module(self, node: int) -> int:
        """``node`` or the nearest module above it (regions skipped; 0: the step)."""
        while node and self.kind[node] == "region":
            node = self.parent[node]
        return node

    def region_path(self, parent: int, name: str) -> str:
        """The path of a region called ``name`` under node ``parent``."""
        return f"{self.path[parent]}.{name}" if parent else name

    def _register_module(self, parent: int, module: Any) -> int:
        walk = self._enclosing_module(parent)  # modules are named after the enclosing module
        cls = type(module)
        if self.names.known(module) is None and (walk or _stateless(module)):
            # made on the fly inside a forward (Hugging Face's `CrossEntropyLoss()` per call),
            # or a stateless module made per step in the loop (`nn.CrossEntropyLoss()(out,
            # y)`): one node per class under its caller, not one per instance (a node and a
            # kept module per step, forever, each its own row in the tree)
            name = _global_name(module, sys._getframe(1)) or cls.__name__
            key = ("made in forward", name)
            node = self.node_ids.get((parent, key))
            if node is None:
                path = f"{self.path[walk]}.{name}" if walk else name
                node = self.node_for(parent, key, path, "module", cls.__name__,
                                     source_of_class(cls))  # fmt: skip
                self.state_of[node] = ()
                self.made_in_forward.add(node)
            return node
        if not walk and self.names.known(module) is None:
            frame = sys._getframe(1)
            owner = _calling_owner(module, frame)
            container = None if owner is not None else _container_of(module, frame)
            if owner is not None:  # name it as its owner does (a LightningModule's `encoder`)
                self.names.register_root(owner)
            elif container is not None:  # an item of a model the script holds, called alone
                held = _variable_of(container, frame)  # (`model.0`: its items by its name)
                self.names.register_root(container, main=held is None, name=held)
            else:  # a root: the variable holding it tells two of one class apart
                self.names.register_root(module, hint=_variable_of(module, frame))
        path = self.names.path_of(module, self.path[walk] if walk else None)
        if self.names.generation != self._names_generation:  # earlier modules were renamed
            self._refresh_paths()
            path = self.names.path_of(module, self.path[walk] if walk else None)
        if is_compiled_module(module):
            self.compiled_module_seen = True  # (collect/compiled.py)
            self.compiled_inner.add(id(getattr(module, "_orig_mod", None)))  # (its own call)
        node = self.node_for(parent, id(module), path, "module", type_name(module),
                             source_of_class(cls))  # fmt: skip
        self.state_of.hold(node, module)
        switch = attention_switch(module)  # (its fused attention off: the library's switch)
        if switch is not None:
            self.attention_switches[node] = switch
        return node

    def _refresh_paths(self) -> None:
        """Re-read every node's path after :class:`ModuleNames` renamed modules (a root
        adopted by a later one); regions are named under their (renamed) parent."""
        self._names_generation = self.names.generation
        module_of = {
            node: key for (_, key), node in self.node_ids.items() if not isinstance(key, tuple)
        }
        live = set(module_of.values())  # (a freed module's nodes, while no module took its id)
        module_of.update((n, k) for n, k in self.freed_keys.items() if k not in live)
        for node in range(1, len(self.path)):
            if self.kind[node] == "module" and node in module_of:
                path = self.names.known_path(module_of[node])
                if path is not None:
                    self.path[node] = path
                    self.name[node] = path.rsplit(".", 1)[-1]
            elif node in self.made_in_forward:  # (under its caller; at the top: its name)
                walk = self._enclosing_module(self.parent[node])
                name = self.name[node]
                self.path[node] = f"{self.path[walk]}.{name}" if walk else name
            elif self.kind[node] == "region":
                self.path[node] = self.region_path(self.parent[node], self.name[node])


def _calling_owner(module: Any, frame: Any, depth: int = 16) -> Any:
    """The module whose method called ``module`` as an outermost call, when one did: the
    ``self`` of the outermost calling frame that is an ``nn.Module`` containing it (Lightning
    calls ``training_step``, never the LightningModule itself, so its ``encoder`` and ``head``
    were first seen as roots named ``Sequential`` and ``Linear``; normflows' ``forward_kld``
    calls each coupling's ``inverse``, which calls its ``param_map``: the flow, not each
    coupling, names the 32 maps). None: called from plain code.

    Example:
        >>> class Owner(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.head = torch.nn.Linear(1, 1)
        ...     def step(self):
        ...         return _calling_owner(self.head, sys._getframe())
        >>> owner = Owner()
        >>> owner.step() is owner, _calling_owner(owner.head, sys._getframe()) is None
        (True, True)
    """
    owner = None
    while frame is not None and depth > 0:
        code = frame.f_code
        # (an owner still in its __init__ may add submodules after this call: it is named
        # when it is called itself, adopting this module then)
        candidate = (
            frame.f_locals.get("self")
            if "self" in code.co_varnames and code.co_name != "__init__"
            else None
        )
        if (
            candidate is not None and candidate is not module and candidate is not owner
            and isinstance(candidate, torch.nn.Module)
            and any(sub is module for sub in candidate.modules())
        ):  # fmt: skip
            owner = candidate
        frame, depth = frame.f_back, depth - 1
    return owner


def _variable_of(module: Any, frame: Any, depth: int = 24) -> str | None:
    """The name the first user frame above ``frame`` (or its module's globals) gives
    ``module``: ``teacher``, ``student``, ``G``. None when it has none (a temporary).

    Example:
        >>> net = torch.nn.Linear(1, 1)
        >>> _variable_of(net, sys._getframe()), _variable_of(torch.nn.ReLU(), sys._getframe())
        ('net', None)
    """
    while frame is not None and depth > 0:
        if kind_of_file(frame.f_code.co_filename) == USER:
            for scope in (frame.f_locals, frame.f_globals):
                for name, value in scope.items():
                    if value is module and not name.startswith("_"):
                        return name
            return None
        frame, depth = frame.f_back, depth - 1
    return None


def _container_of(module: Any, frame: Any, depth: int = 24) -> Any:
    """The largest module a variable of the first user frame above ``frame`` (or its module's
    globals) holds that contains ``module`` as a list's item (``_holds_as_item``): blocks called one by one
    from a loop over the model (``for block in model: x = block(x)``) are its items, named
    ``0``, ``1``... as one stack (were ``block``, ``Block``, ``Block#2``...). None: no such.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1))
        >>> _container_of(model[1], sys._getframe()) is model, _container_of(model, sys._getframe())
        (True, None)
    """
    while frame is not None and depth > 0:
        if kind_of_file(frame.f_code.co_filename) == USER:
            if frame.f_code.co_name == "__init__":  # (a model still being built: it names its
                return None  # submodules when it is called itself; _calling_owner's rule)
            best, size = None, 0
            for scope in (frame.f_locals, frame.f_globals):
                for name, value in list(scope.items()):
                    if (
                        isinstance(value, torch.nn.Module) and value is not module
                        and not name.startswith("_") and name != "self"
                    ):  # fmt: skip
                        subs = list(value.modules())
                        if len(subs) > size and any(_holds_as_item(sub, module) for sub in subs):
                            best, size = value, len(subs)
            return best
        frame, depth = frame.f_back, depth - 1
    return None


_LISTS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)


def _holds_as_item(container: Any, module: Any) -> bool:
    """``module`` is an item of ``container``, a Sequential, ModuleList or ModuleDict (not an
    attribute of a wrapper: an EMA that holds the trained model is not the model's name)."""
    return isinstance(container, _LISTS) and any(c is module for c in container.children())


def _stateless(module: Any) -> bool:
    """No parameters, buffers or submodules (a loss, an activation): its instances are alike.

    Example:
        >>> _stateless(torch.nn.CrossEntropyLoss()), _stateless(torch.nn.Linear(1, 1))
        (True, False)
    """
    return not module._modules and not any(
        value is not None for value in (*module._parameters.values(), *module._buffers.values())
    )  # (a loss registers its optional class weight as a None buffer)


def _global_name(module: Any, frame: Any, depth: int = 10) -> str | None:
    """The module-level name a calling frame's module binds ``module`` to, when one does: a
    function wrapped as a module and called like one (the ``kernels`` package's ``Func``, which
    transformers 5 binds to ``apply_rotary_pos_emb``: its rows read "Func" under every
    attention). None: no global of the first ``depth`` frames holds it.

    Example:
        >>> apply_rotary = torch.nn.Identity()
        >>> _global_name(apply_rotary, sys._getframe()), _global_name(torch.nn.Identity(), sys._getframe())
        ('apply_rotary', None)
    """
    while frame is not None and depth > 0:
        for name, value in list(frame.f_globals.items()):
            if value is module and not name.startswith("_"):
                return name
        frame, depth = frame.f_back, depth - 1
    return None
