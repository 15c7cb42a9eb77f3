"""The project's autograd questions: whether a function's callers, or a method's every
definition, run without autograd (:class:`GradQueries`, a part of
:class:`~torchdoctor.lint.project.Project`).

Example:
    >>> from torchdoctor.lint.project import Project
    >>> project = Project()
    >>> project.add("s.py", "@torch.no_grad()\\ndef run(m):\\n    return sample(m)\\n")
    >>> project.callers_run_without_grad("sample")
    True
"""

from __future__ import annotations

import ast
import re
from typing import Any

from torchdoctor.lint.project_scan import _disables_grad, _under_no_grad


class GradQueries:
    """Autograd questions over the project's files (``paths``, ``text``, ``tree`` and the
    ``_no_grad`` cache are the :class:`~torchdoctor.lint.project.Project`'s).

    Example:
        >>> from torchdoctor.lint.project import Project
        >>> issubclass(Project, GradQueries)
        True
    """

    paths: list[str]
    _no_grad: dict[Any, bool | None]

    def text(self, path: str) -> str:  # pragma: no cover - the Project's
        raise NotImplementedError

    def tree(self, path: str) -> ast.Module | None:  # pragma: no cover - the Project's
        raise NotImplementedError

    def callers_run_without_grad(
        self, name: str, depth: int = 2, home: str | None = None
    ) -> bool | None:
        """True when ``name(...)`` / ``x.name(...)`` is called in the project and every call
        runs under no_grad (directly, or inside a function whose own callers all do, up to
        ``depth`` calls up); False when some call does not; None when nothing calls it.
        With ``home``, the file that defines the function, a bare ``name(...)`` in another
        file that defines its own module-level ``def name`` calls that one, not this (two
        scripts, each with its own ``evaluate``)."""
        key = (name, depth, home)
        if key in self._no_grad:
            return self._no_grad[key]
        self._no_grad[key] = None  # recursion guard
        # (a call, or the method taken as a value to call later: diffusion_policy's
        # `sample_fn = self.conditional_sample_fast if fast else self.conditional_sample`)
        pattern = re.compile(rf"\b{re.escape(name)}\s*\(|\.{re.escape(name)}\b(?!\s*\()")
        found = False
        verdict: bool | None = True
        for path in self.paths:
            if not pattern.search(self.text(path)):
                continue
            tree = self.tree(path)
            if tree is None:
                continue
            own = home is not None and path != home and any(
                isinstance(d, ast.FunctionDef | ast.AsyncFunctionDef) and d.name == name
                for d in tree.body
            )
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and own and isinstance(node.func, ast.Name):
                    continue  # (this file's own `def name`)
                if isinstance(node, ast.Call):
                    func = node.func
                    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and (
                    getattr(getattr(node, "td_parent", None), "func", None) is not node
                ):
                    called = node.attr  # (a bound method as a value; a call's is the call's)
                else:
                    continue
                if called != name:
                    continue
                found = True
                where = _under_no_grad(node)
                if where is True or where is not False and _in_autograd_function(where):
                    continue  # (a torch.autograd.Function's forward runs without autograd)
                if where is False or depth <= 1 or where.name == "forward":
                    # (a module's forward runs through __call__: its explicit .forward(...)
                    # calls, a generate loop's under no_grad, say nothing of its training)
                    verdict = False
                    break
                if self.callers_run_without_grad(where.name, depth - 1, path) is not True:
                    verdict = False
                    break
            if verdict is False:
                break
        result = verdict if found else None
        self._no_grad[key] = result
        return result

    def method_disables_grad(self, name: str) -> bool | None:
        """Every ``def name(...)`` in the project turns autograd off around its work (a
        ``with torch.no_grad()`` / ``inference_mode`` in its body, or such a decorator), hands
        the call on to another object's ``.name(...)`` (stable-baselines3's
        ``BaseAlgorithm.predict`` -> ``self.policy.predict``), or is a stub (a Protocol's
        ``...``): True; False when one does not; None when the project defines none.

        Example:
            >>> from torchdoctor.lint.project import Project
            >>> project = Project()
            >>> project.add("p.py", "class P:\\n    def predict(self, x):\\n"
            ...             "        with th.no_grad():\\n            return self.net(x)\\n"
            ...             "class A:\\n    def predict(self, x):\\n"
            ...             "        return self.policy.predict(x)\\n")
            >>> project.method_disables_grad("predict"), project.method_disables_grad("sample")
            (True, None)
        """
        key = ("disables", name)
        if key in self._no_grad:
            return self._no_grad[key]  # type: ignore[return-value]
        found, verdict = False, True
        for node in self.functions_named(name):  # type: ignore[attr-defined]
            found = True
            verdict = verdict and _disables_grad(node)
        result = verdict if found else None
        self._no_grad[key] = result
        return result

    def module_runs_without_grad(self, class_name: str) -> bool:
        """Every name the project binds an instance of ``class_name`` to (``self.decoder =
        MeshDecoder()``) is called only under ``torch.no_grad()``: an inference-only module.
        False when no instance is found."""
        key = ("instances", class_name)
        if key in self._no_grad:
            return bool(self._no_grad[key])
        self._no_grad[key] = False  # recursion guard
        pattern = re.compile(rf"\b{re.escape(class_name)}\s*\(")
        bound: set[str] = set()
        for path in self.paths:
            tree = self.tree(path) if pattern.search(self.text(path)) else None
            for node in ast.walk(tree) if tree is not None else ():
                if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
                    continue
                func = node.value.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called == class_name:
                    for target in node.targets:
                        name = target.attr if isinstance(target, ast.Attribute) else None
                        bound.add(name or getattr(target, "id", ""))
        verdict = (
            bool(bound)
            and "" not in bound
            and all(self.callers_run_without_grad(name) is True for name in bound)
        )
        self._no_grad[key] = verdict
        return verdict

    def caller_functions(self, name: str) -> set[str] | None:
        """The names of the functions whose bodies call ``name(...)`` / ``x.name(...)`` in
        the project (``"<module>"`` for a call at a file's top level); None when nothing does.

        Example:
            >>> from torchdoctor.lint.project import Project
            >>> project = Project()
            >>> project.add("m.py", "class M:\\n    def forward(self, x):\\n        return self.iclk(x)\\n")
            >>> project.caller_functions("iclk"), project.caller_functions("other")
            ({'forward'}, None)
        """
        pattern = re.compile(rf"\b{re.escape(name)}\s*\(")
        found: set[str] = set()
        for path in self.paths:
            tree = self.tree(path) if pattern.search(self.text(path)) else None
            for node in ast.walk(tree) if tree is not None else ():
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")) != name:
                    continue
                parent = getattr(node, "td_parent", None)
                while parent is not None and not isinstance(
                        parent, (ast.FunctionDef, ast.AsyncFunctionDef)):  # fmt: skip
                    parent = getattr(parent, "td_parent", None)
                found.add(parent.name if parent is not None else "<module>")
        return found or None

    def results_differentiated(self, name: str, home: str | None = None, method: bool = False) -> bool:
        """Some function of the project differentiates what its call ``name(...)`` returns:
        a name assigned from the call reaches a ``.backward()`` there (a GFlowNet's
        ``final, logpf, logpb = sample_trajectories(env, policy, n)``, then
        ``loss = (log_z + logpf - log_r - logpb).pow(2).mean()``; ``loss.backward()``,
        REINFORCE's sampled log-probabilities): the sampler runs its model with autograd on by
        design. A function's calls are ``name(...)`` / ``module.name(...)`` (in ``home``, the
        file defining it, or a file without its own ``def name``); a ``method``'s,
        ``x.name(...)``.

        Example:
            >>> from torchdoctor.lint.project import Project
            >>> project = Project()
            >>> project.add("t.py", "for it in range(9):\\n    a, logp = sample(pi)\\n"
            ...             "    (-logp).mean().backward()\\n    b = sample_eval(pi)\\n")
            >>> project.results_differentiated("sample"), project.results_differentiated("sample_eval")
            (True, False)
        """
        pattern = re.compile(rf"\b{re.escape(name)}\s*\(")
        for path in self.paths:
            text = self.text(path)
            tree = self.tree(path) if ".backward(" in text and pattern.search(text) else None
            if tree is None or home is not None and path != home and any(
                    isinstance(d, ast.FunctionDef | ast.AsyncFunctionDef) and d.name == name
                    for d in tree.body):  # fmt: skip
                continue  # (another script with its own `def name`: its calls are of that one)
            scopes = [tree, *ast.walk(tree)]
            if any(isinstance(scope, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef)
                   and _feeds_a_backward(scope, name, method) for scope in scopes):  # fmt: skip
                return True
        return False

    def function_needs_grad(self, name: str) -> bool:
        """The project's one module-level ``def name`` differentiates (``torch.autograd.grad``,
        ``.backward()``): a loop calling it needs autograd, evaluation or not (SchNet's
        forces, the energy's gradient with respect to the positions).

        Example:
            >>> from torchdoctor.lint.project import Project
            >>> project = Project()
            >>> project.add("f.py", "def forces(e, pos):\\n    return torch.autograd.grad(e, pos)\\n")
            >>> project.function_needs_grad("forces"), project.function_needs_grad("other")
            (True, False)
        """
        function = self.module_function(name)  # type: ignore[attr-defined]
        if function is None:
            return False
        text = ast.unparse(function)
        return "autograd.grad(" in text or ".backward(" in text


def _in_autograd_function(function: ast.AST) -> bool:
    """A method of a ``torch.autograd.Function`` subclass (PointNetLK's ``InvMatrix.forward``
    calling ``batch_inverse``): it runs with autograd off. Needs the parent links.

    Example:
        >>> from torchdoctor.lint.syntax import link_parents
        >>> tree = ast.parse("class Inv(torch.autograd.Function):\\n    def forward(ctx, x):\\n"
        ...                  "        return x\\n")
        >>> _ = link_parents(tree)
        >>> _in_autograd_function(tree.body[0].body[0])
        True
    """
    owner = getattr(function, "td_parent", None)
    return isinstance(owner, ast.ClassDef) and any(
        (ast.unparse(base)).endswith("Function") for base in owner.bases)  # fmt: skip


def _feeds_a_backward(function: ast.AST, name: str, method: bool = False) -> bool:
    """In ``function`` (its own statements, not those of the functions and classes it
    defines), a name assigned from a call of ``name`` reaches (through later assignments, in
    line order) what a ``.backward()`` there differentiates. The call is ``name(...)`` or
    ``module.name(...)``; with ``method``, ``x.name(...)``.

    Example:
        >>> src = ("def train(p):\\n    a, logp = roll(p)\\n    loss = -(logp * a).mean()\\n"
        ...        "    loss.backward()\\n")
        >>> f = ast.parse(src).body[0]
        >>> _feeds_a_backward(f, "roll"), _feeds_a_backward(f, "other")
        (True, False)
    """
    own = list(_own_nodes(function))
    fed: set[str] = set()
    steps = sorted((n for n in own if isinstance(n, ast.Assign | ast.AugAssign)),
                   key=lambda n: (n.lineno, n.col_offset))  # fmt: skip
    for step in steps:
        if any(isinstance(c, ast.Call) and _calls(c, name, method) or isinstance(c, ast.Name)
               and c.id in fed for c in ast.walk(step.value)):  # fmt: skip
            for target in getattr(step, "targets", None) or [step.target]:
                elts = target.elts if isinstance(target, ast.Tuple | ast.List) else [target]
                fed |= {t.id for t in elts if isinstance(t, ast.Name)}  # (not self.x = ...)
    for call in own:
        if isinstance(call, ast.Call) and _call_name(call) == "backward":
            operand = call.args[0] if call.args else call.func.value  # type: ignore[attr-defined]
            if any(isinstance(n, ast.Name) and n.id in fed for n in ast.walk(operand)):
                return True
    return False


def _own_nodes(scope: ast.AST):
    """The nodes of ``scope``'s body, not entering the functions and classes it defines."""
    stack = list(getattr(scope, "body", []))
    while stack:
        node = stack.pop()
        yield node
        stack.extend(c for c in ast.iter_child_nodes(node)
                     if not isinstance(c, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef))  # fmt: skip


def _calls(call: ast.Call, name: str, method: bool) -> bool:
    """``call`` calls ``name``: ``name(...)``, ``module.name(...)`` (a dotted module path, not
    ``self``'s), or with ``method``, ``x.name(...)``."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id == name and not method
    if not isinstance(func, ast.Attribute) or func.attr != name:
        return False
    root = func.value
    while isinstance(root, ast.Attribute):
        root = root.value
    return method or isinstance(root, ast.Name) and root.id != "self"


def _call_name(call: ast.Call) -> str:
    """The called name: ``f`` of ``f(x)``, ``backward`` of ``loss.backward()``.

    Example:
        >>> _call_name(ast.parse("scaler.scale(loss).backward()", mode="eval").body)
        'backward'
    """
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
