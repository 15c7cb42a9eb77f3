"""Whether a function runs on every training step or model call: a ``forward`` of the file
calls it, a ``forward`` of another file does (through its imports, ``Project.called_in_forward``),
or a step loop of the project does (``Project.called_in_loop``), directly or up to
:data:`MAX_DEPTH` calls away through the file's functions (``forward`` -> ``_crop`` ->
``_jitter``). A mixin of the rules that report work repeated per step in helpers (TD204, TD511).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

from torchdoctor.lint.denoising_loops import SAMPLING_FUNCTION
from torchdoctor.lint.project_scan import _calls_in_body, step_loop
from torchdoctor.lint.syntax import and_others
from torchdoctor.lint.tensors import framework_step_method
from torchdoctor.lint.visitor import FUNCTIONS, method_name


class PerStepCalls:
    """:meth:`per_step_call` for a rule visitor (it uses ``self.context`` and
    ``self.parent``).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\nclass M(torch.nn.Module):\\n    def forward(self, x):\\n"
        ...        "        return self._scale(x)\\n    def _scale(self, x):\\n"
        ...        "        return x * torch.tensor([1.0, 2.0], device=x.device)\\n")
        >>> [f.message.split(':')[0][-51:] for f in lint_source(src)]
        ['on every call of `M._scale` (called by `M.forward`)']
    """

    def per_step_call(self, scope: ast.AST) -> str | None:
        """``on every call of `fn` (called by `a`, called by `Cls.forward`)`` when the function
        ``scope`` runs on every step or model call (see the module docstring); else None. A
        lambda the module binds to a name is that function (nerf-pytorch's ``mse2psnr =
        lambda x: -10. * torch.log(x) / torch.log(torch.Tensor([10.]))``)."""
        owner = self.parent(scope)  # type: ignore[attr-defined]
        function = getattr(scope, "name", None) or _bound_name(scope, owner)
        if function is None:
            return None
        name = f"{owner.name}.{function}" if isinstance(owner, ast.ClassDef) else function
        chain = [function]
        while len(chain) <= MAX_DEPTH:
            called_by = self._called_per_step(chain[-1])
            if called_by is not None:
                via = "".join(f"called by `{c}`, " for c in chain[1:])
                return f"on every call of `{name}` ({via}{called_by})"
            callers = [c for c in self._callers().get(chain[-1], ())
                       if c not in chain and not self._set_up_by_sampler(c, chain[-1])]
            if not callers:
                return None
            chain.append(callers[0])
        return None

    def _set_up_by_sampler(self, caller: str, function: str) -> bool:
        """``caller`` is a sampler of this file (``sample``, ``generate``: a function with a
        loop) that calls ``function`` only outside its loops: set-up once per sampling run
        (DDIM's ``self.make_schedule(S)`` before the denoising loop), not per step.
        """
        if not SAMPLING_FUNCTION.search(caller):
            return False
        for fn in ast.walk(self.context.tree) if self.context.tree else ():
            if not (isinstance(fn, FUNCTIONS) and fn.name == caller):
                continue
            loops = [n for n in ast.walk(fn) if isinstance(n, ast.For | ast.While)]
            calls = [c for c in ast.walk(fn) if isinstance(c, ast.Call)
                     and (method_name(c) or getattr(c.func, "id", None)) == function]  # fmt: skip
            inside = {id(c) for loop in loops for c in ast.walk(loop)}
            return bool(loops) and bool(calls) and not any(id(c) in inside for c in calls)
        return False

    def _called_per_step(self, function: str) -> str | None:
        """``called by `Cls.forward``` when a ``forward`` of this file calls ``function``,
        ``called in a loop at file:line`` when a step loop of the project does; else None."""
        table = self._callees_of_forwards()
        if function in table:
            return f"called by `{table[function]}`"
        root = self._step_roots().get(function)
        if root is not None:  # (Lightning's training_step, a Trainer's compute_loss)
            return f"called by `{root}`"
        project = self.context.project
        for cls in self._classes_defining(function) if project is not None else ():
            site = project.method_called_in_loop(cls, function)  # type: ignore[attr-defined]
            if site is not None:  # (agent.learn(batch) in a training loop of the project)
                return f"called in a loop at {site[0]}:{site[1]}"
        hit = project.called_in_forward(function, self.context.path) if project is not None else None  # type: ignore[attr-defined]
        if hit is not None:  # (another file's forward, through its imports)
            return f"called by `{hit[2]}`{and_others(hit[3])} ({hit[0]}:{hit[1]})"
        caller = project.called_in_loop(function, path=self.context.path) if project is not None else None  # type: ignore[attr-defined]
        if caller is not None:  # (this file's own loop first: two scripts' to_categorical)
            caller = self._own_loop_call(function) or caller
        return None if caller is None else f"called in a loop at {caller[0]}:{caller[1]}"

    def _own_loop_call(self, function: str) -> tuple[str, int] | None:
        """``(file, line)`` of the first call of ``function`` in a step loop of this file."""
        tree, path = self.context.tree, self.context.path  # type: ignore[attr-defined]
        lines = [call.lineno for loop in (ast.walk(tree) if tree is not None else ())
                 if isinstance(loop, ast.For | ast.While) and step_loop(loop)
                 for call in _calls_in_body(loop) if getattr(call.func, "id", None) == function]
        return (Path(path).name, min(lines)) if lines else None

    def _callees_of_forwards(self) -> dict[str, str]:
        """Each name ``name(...)`` / ``self.name(...)`` called in a ``Cls.forward`` of this
        file: ``Cls.forward``."""
        return self._callees_of("forward callees", lambda cls, fn: fn.name == "forward")

    def _classes_defining(self, method: str) -> list[str]:
        """The classes of this file with a method ``method``."""
        tree = self.context.tree
        return [c.name for c in (tree.body if tree is not None else ())
                if isinstance(c, ast.ClassDef)
                and any(isinstance(f, FUNCTIONS) and f.name == method for f in c.body)]  # fmt: skip

    def _step_roots(self) -> dict[str, str]:
        """Each name called in a method a framework runs every training step (Lightning's
        ``training_step``, a Hugging Face ``Trainer`` subclass's ``compute_loss``) of this
        file: ``Cls.method``."""
        return self._callees_of("step-root callees", framework_step_method)

    def _callees_of(self, key: str, chosen: Callable[[ast.ClassDef, ast.AST], bool]) -> dict[str, str]:
        """Each name called in a method of a class of this file that ``chosen(cls, method)``
        accepts: ``Cls.method`` (the first such), cached under ``key``."""
        table = self.context.cache.get((key,))
        if table is None:
            table = {}
            for cls in ast.walk(self.context.tree) if self.context.tree else ():
                for item in cls.body if isinstance(cls, ast.ClassDef) else ():
                    if isinstance(item, FUNCTIONS) and chosen(cls, item):
                        for callee in _callees(item):
                            table.setdefault(callee, f"{cls.name}.{item.name}")
            self.context.cache[(key,)] = table
        return table

    def _callers(self) -> dict[str, list[str]]:
        """Each name called in a function or method of this file (not a ``forward``: those
        are :meth:`_callees_of_forwards`): the functions calling it, in file order."""
        key = ("callers",)
        table = self.context.cache.get(key)
        if table is None:
            table = {}
            for fn in ast.walk(self.context.tree) if self.context.tree else ():
                if isinstance(fn, FUNCTIONS) and fn.name != "forward":
                    for callee in _callees(fn):
                        if callee != fn.name and fn.name not in table.setdefault(callee, []):
                            table[callee].append(fn.name)
            self.context.cache[key] = table
        return table


#: calls from a forward or a step loop followed to find a function run per step
MAX_DEPTH = 3


def _callees(function: ast.AST) -> set[str]:
    """The names ``name(...)`` / ``obj.name(...)`` called in ``function``.

    Example:
        >>> fn = ast.parse("def f(x):\\n    return g(x) + self.h(x)\\n").body[0]
        >>> sorted(_callees(fn))
        ['g', 'h']
    """
    names = set()
    for call in ast.walk(function):
        if isinstance(call, ast.Call):
            callee = method_name(call) or getattr(call.func, "id", None)
            if callee:
                names.add(callee)
    return names


def _bound_name(scope: ast.AST, owner: ast.AST | None) -> str | None:
    """The name a module-level ``name = lambda ...:`` binds ``scope`` (a lambda) to.

    Example:
        >>> from torchdoctor.lint.syntax import link_parents
        >>> tree = ast.parse("psnr = lambda x: -10. * torch.log10(x)")
        >>> _ = link_parents(tree)
        >>> _bound_name(tree.body[0].value, tree.body[0])
        'psnr'
    """
    if isinstance(scope, ast.Lambda) and isinstance(owner, ast.Assign) and owner.value is scope:
        target = owner.targets[0]
        if len(owner.targets) == 1 and isinstance(target, ast.Name) and isinstance(
                getattr(owner, "td_parent", None), ast.Module):  # fmt: skip
            return target.id
    return None
