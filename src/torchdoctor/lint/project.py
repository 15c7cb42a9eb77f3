"""What the files linted together tell each rule: the repository-wide view.

Some rules need more than one file: whether the project moves data to CUDA anywhere (a
DataLoader built in ``datasets/build.py`` feeds ``.cuda()`` calls in ``train.py``), or whether
every caller of a sampling function runs it under ``torch.no_grad()``. A :class:`Project` holds
the paths only and reads or parses a file when a rule first asks about it (then caches it), so
linting stays one parse per file unless a question needs another file.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from pathlib import Path

from torchdoctor.lint.forward_calls import ForwardCall, forward_calls
from torchdoctor.lint.loop_call_index import index_loop_calls, site_for
from torchdoctor.lint.project_grad import GradQueries
from torchdoctor.lint.project_loaders import pinned_loader_passed
from torchdoctor.lint.project_scan import (
    _STEP_MARKERS,
    USES_CUDA,
    _parse,
    _runs_parameter,
    method_calls_in_step_loops,
    wraps_ddp_around,
)
from torchdoctor.lint.syntax import link_parents
from torchdoctor.lint.tensors import numbers_in_literal

#: a function definition's name (the ``defining`` index)
_DEF = re.compile(r"\bdef\s+(\w+)\s*\(")

class Project(GradQueries):
    """The files linted together (paths; contents read on demand).

    Example:
        >>> Project([]).uses_cuda
        False
    """

    def __init__(self, paths: Sequence[str] = ()) -> None:
        self.paths = list(paths)
        self._texts: dict[str, str] = {}
        self._trees: dict[str, ast.Module | None] = {}
        self._uses_cuda: bool | None = None
        self._no_grad: dict[tuple[str, int], bool | None] = {}
        self._loop_calls: dict | None = None  # called_in_loop's index
        self._forward_calls: dict[str, list[ForwardCall]] | None = None  # called_in_forward
        self._method_calls: dict[tuple[str, str], tuple[str, int]] | None = None  # method_called_in_loop

    def __getstate__(self) -> dict:  # worker processes rebuild the caches
        return {"paths": self.paths}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["paths"])

    def add(self, path: str, text: str, tree: ast.Module | None = None) -> None:
        """Make an in-memory file (the one being linted) part of the project."""
        if path not in self.paths:
            self.paths.append(path)
            for keyword in ("def", "class"):  # (the definitions' index is rebuilt with it)
                self._no_grad.pop((f"module {keyword} index",), None)  # type: ignore[call-overload]
        self._texts[path] = text
        if tree is not None:
            self._trees[path] = tree

    def defining(self, name: str) -> list[str]:
        """The project's files with a ``def name(`` (an index of every file's ``def`` names,
        built once: a whole-package lint searched every file's text for each name asked).

        Example:
            >>> project = Project()
            >>> project.add("a.py", "def f(x):\\n    return x\\n")
            >>> project.defining("f"), project.defining("g")
            (['a.py'], [])
        """
        index = self._no_grad.get(("def names",))  # type: ignore[call-overload]
        if index is None or index[0] != len(self.paths):
            names: dict[str, list[str]] = {}
            for path in self.paths:
                for found in set(_DEF.findall(self.text(path))):
                    names.setdefault(found, []).append(path)
            index = self._no_grad[("def names",)] = (len(self.paths), names)  # type: ignore[index]
        return index[1].get(name, [])

    def functions_named(self, name: str) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
        """Every ``def name`` of the project's files, nested ones included (each file's tree
        walked once for all names).

        Example:
            >>> project = Project()
            >>> project.add("a.py", "class A:\\n    def f(self):\\n        pass\\n")
            >>> [f.name for f in project.functions_named("f")]
            ['f']
        """
        found = []
        for path in self.defining(name):
            index = self._no_grad.get(("functions", path))  # type: ignore[call-overload]
            if index is None:
                index = {}
                for node in ast.walk(self.tree(path) or ast.Module(body=[], type_ignores=[])):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        index.setdefault(node.name, []).append(node)
                self._no_grad[("functions", path)] = index  # type: ignore[index]
            found += index.get(name, [])
        return found

    def text(self, path: str) -> str:
        if path not in self._texts:
            try:
                self._texts[path] = Path(path).read_text(encoding="utf-8", errors="replace")
            except OSError:
                self._texts[path] = ""
        return self._texts[path]

    def tree(self, path: str) -> ast.Module | None:
        if path not in self._trees:
            try:
                tree = ast.parse(self.text(path))
                link_parents(tree)
            except (SyntaxError, ValueError, RecursionError):
                tree = None
            self._trees[path] = tree
        return self._trees[path]

    @property
    def uses_cuda(self) -> bool:
        """Some file moves data to CUDA (``.cuda()``, ``'cuda'``, ``non_blocking=True``)."""
        if self._uses_cuda is None:
            self._uses_cuda = any(USES_CUDA.search(self.text(p)) for p in self.paths)
        return self._uses_cuda

    def wrapped_in_ddp_by_caller(self, function: str, path: str) -> bool:
        """A file of the project wraps a model in DistributedDataParallel (``DDP(``) and
        imports ``function`` from the module at ``path`` (MAE's ``main_pretrain.py`` wraps the
        model and calls ``engine_pretrain.train_one_epoch``): the function trains under DDP.

        Example:
            >>> project = Project()
            >>> project.add("engine.py", "def train_one_epoch(model):\\n    pass\\n")
            >>> project.add("main.py", "from engine import train_one_epoch\\nm = DDP(m)\\n")
            >>> project.wrapped_in_ddp_by_caller("train_one_epoch", "engine.py")
            True
        """
        return any(wraps_ddp_around(self.text(p), Path(path).stem, function)
                   for p in self.paths if p != path)  # fmt: skip

    def pinned_loader_passed(
        self, function: str, path: str, position: int | None, keyword: str | None
    ) -> tuple[str, int] | None:
        """``(file name, line)`` of a ``DataLoader(..., pin_memory=True)`` that another file
        passes to ``function`` of the module at ``path`` as its argument at ``position`` or
        by ``keyword`` (see :mod:`torchdoctor.lint.project_loaders`); None when none does.

        Example:
            >>> project = Project()
            >>> project.add("engine.py", "def fit(model, loader):\\n    pass\\n")
            >>> project.add("main.py", "from engine import fit\\n"
            ...             "dl = DataLoader(ds, pin_memory=True)\\nfit(m, dl)\\n")
            >>> project.pinned_loader_passed("fit", "engine.py", 1, "loader")
            ('main.py', 2)
        """
        key = ("pinned loader", function, path, position, keyword)
        if key not in self._no_grad:
            found = None
            for other in self.paths:
                text = self.text(other) if other != path else ""
                if function in text and "pin_memory" in text:
                    line = pinned_loader_passed(text, self.tree(other), Path(path).stem,
                                                function, position, keyword)  # fmt: skip
                    if line is not None:
                        found = (Path(other).name, line)
                        break
            self._no_grad[key] = found  # type: ignore[assignment]
        return self._no_grad[key]  # type: ignore[return-value]

    def called_in_loop(self, name: str, training: bool | str = False,
                       path: str | None = None) -> tuple[str, int] | None:
        """``(file name, line)`` of the first call ``name(...)`` / ``utils.name(...)`` (an
        imported module's) / ``self.name(...)`` in the project made inside the body of a step
        loop (:func:`step_loop`) of its own function (a helper run every step: fast_neural_style's
        ``utils.normalize_batch`` in the training loop); with ``training``, only a loop that
        calls ``.backward()`` or ``.step()``; with ``training="every step"``, only a call under
        no logging gate (:func:`gated_calls`); with ``path`` (the file defining ``name``), not
        a call in another file that defines a function ``name`` of its own
        (:mod:`torchdoctor.lint.loop_call_index`); None. Indexed once, on the first question.

        Example:
            >>> project = Project([])
            >>> project.add("train.py", "import utils\\nfor b in loader:\\n    x = utils.norm(b)\\n")
            >>> project.called_in_loop("norm"), project.called_in_loop("other")
            (('train.py', 3), None)
        """
        if self._loop_calls is None:
            self._loop_calls = {}
            for file in self.paths:
                if _STEP_MARKERS.search(self.text(file)):
                    tree = self._trees.get(file) or _parse(self.text(file))  # (no parent links)
                    if tree is not None:
                        index_loop_calls(file, tree, self._loop_calls)
        key = ("every step" if training == "every step" else "training", name) if training else name
        return site_for(self._loop_calls, key, path)

    def method_called_in_loop(self, class_name: str, method: str) -> tuple[str, int] | None:
        """``(file name, line)`` of a call of ``method`` on an instance of ``class_name`` inside
        a step loop of the project (``agent = DQNAgent(...)``; ``agent.learn(batch)`` every
        step: ``project_scan.method_calls_in_step_loops``); None. Indexed once.

        Example:
            >>> project = Project([])
            >>> project.add("t.py", "a = Agent()\\nfor b in loader:\\n    a.learn(b)\\n")
            >>> project.method_called_in_loop("Agent", "learn")
            ('t.py', 3)
        """
        if self._method_calls is None:
            self._method_calls = {}
            for path in self.paths:
                if not _STEP_MARKERS.search(self.text(path)):
                    continue
                tree = self._trees.get(path) or _parse(self.text(path))
                for key, site in (method_calls_in_step_loops(path, tree) if tree else {}).items():
                    self._method_calls.setdefault(key, site)
        return self._method_calls.get((class_name, method))

    def called_in_forward(self, name: str, path: str) -> tuple[str, int, str, int] | None:
        """``(file name, line, "Cls.forward", others)`` of the first call, in a module's
        ``forward`` in the project, of the function ``name`` defined in ``path`` (as the
        caller's imports resolve it: ``lint/forward_calls.py``): a helper run on every call
        (DETR's ``generalized_box_iou`` in ``HungarianMatcher.forward``, a ``@torch.no_grad()``
        forward run every training step); ``others``: how many other classes' forwards call it
        too (PointNet++'s SSG and MSG set abstractions: which one runs is the script's choice);
        None. Indexed once, on the first question.

        Example:
            >>> project = Project([])
            >>> project.add("m.py", "class M:\\n    def forward(self, x):\\n        return iou(x)\\n"
            ...             "def iou(x):\\n    return x\\n")
            >>> project.called_in_forward("iou", "m.py"), project.called_in_forward("iou", "n.py")
            (('m.py', 3, 'M.forward', 0), None)
        """
        if self._forward_calls is None:
            self._forward_calls = {}
            for file in self.paths:
                text = self.text(file)
                tree = None if "def forward" not in text else (
                    self._trees.get(file) or _parse(text))  # fmt: skip
                for call in forward_calls(file, tree) if tree is not None else ():
                    self._forward_calls.setdefault(call.name, []).append(call)
        hits = [call for call in self._forward_calls.get(name, ()) if call.defined_in(path)]
        if not hits:
            return None
        return Path(hits[0].file).name, hits[0].line, hits[0].owner, len({c.owner for c in hits}) - 1

    def method_sync(self, class_name: str, method: str) -> tuple[str, int, str] | None:
        """``(path, line, call)`` of a host read (``.item()``, ``.cpu()``, ``.tolist()``,
        ``.numpy()``) in method ``method`` of the project's class ``class_name``; None when
        the class or method is not found or it reads nothing."""
        key = ("sync", class_name, method)
        if key in self._no_grad:
            return self._no_grad[key]  # type: ignore[return-value]
        found = None
        pattern = re.compile(rf"^\s*class\s+{re.escape(class_name)}\b", re.MULTILINE)
        for path in self.paths:
            if found is not None or not pattern.search(self.text(path)):
                continue
            tree = self.tree(path)
            for node in ast.walk(tree) if tree is not None else ():
                if not (isinstance(node, ast.ClassDef) and node.name == class_name):
                    continue
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                        item.name == method
                    ):
                        for call in ast.walk(item):
                            func = getattr(call, "func", None)
                            if (
                                isinstance(call, ast.Call)
                                and isinstance(func, ast.Attribute)
                                and func.attr in {"item", "cpu", "tolist", "numpy"}
                                and not call.args
                            ):
                                found = (path, call.lineno, ast.unparse(call))
                                break
        self._no_grad[key] = found  # type: ignore[assignment]
        return found

    def function_calls(self, qualified: str, attr: str) -> tuple[str, int] | None:
        """``(path, line)`` of a call of ``.attr(...)`` / ``attr(...)`` inside the project's
        module-level function ``qualified`` (``utils.comm.synchronize``: ``def synchronize``
        in a file ``.../utils/comm.py``); None when not found."""
        key = ("calls", qualified, attr)
        if key in self._no_grad:
            return self._no_grad[key]  # type: ignore[return-value]
        module, _, name = qualified.lstrip(".").rpartition(".")
        suffix = "/" + module.replace(".", "/") + ".py"
        found = None
        for path in self.paths:
            if not module or not path.replace("\\\\", "/").endswith(suffix):
                continue
            tree = self.tree(path)
            for node in tree.body if tree is not None else ():
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                    for call in ast.walk(node):
                        func = getattr(call, "func", None)
                        called = func.attr if isinstance(func, ast.Attribute) else None
                        called = called or (func.id if isinstance(func, ast.Name) else None)
                        if isinstance(call, ast.Call) and called == attr:
                            found = (path, call.lineno)
                            break
        self._no_grad[key] = found  # type: ignore[assignment]
        return found

    def module_function(self, name: str) -> ast.FunctionDef | None:
        """The project's one module-level ``def name(...)`` (None when no file, or more than
        one, defines it): a helper imported from another file (``train_ds =
        make_dataset(n)`` with ``make_dataset`` in ``data.py``).

        Example:
            >>> project = Project()
            >>> project.add("data.py", "def make(n):\\n    return TensorDataset(x)\\n")
            >>> project.module_function("make").name, project.module_function("other")
            ('make', None)
        """
        return self._one_definition(name, "def", ast.FunctionDef)  # type: ignore[return-value]

    def module_class(self, name: str) -> ast.ClassDef | None:
        """The project's one module-level ``class name`` (None when no file, or more than one,
        defines it): a Dataset another file builds.

        Example:
            >>> project = Project()
            >>> project.add("data.py", "class Rows:\\n    def __getitem__(self, i):\\n        return i\\n")
            >>> project.module_class("Rows").name, project.module_class("Other")
            ('Rows', None)
        """
        return self._one_definition(name, "class", ast.ClassDef)  # type: ignore[return-value]

    def _one_definition(self, name: str, keyword: str, kind: type) -> ast.AST | None:
        """The one module-level ``def name`` / ``class name`` of the project's files (found
        by text first, parsed only where it is), cached; None for none or several."""
        key = (f"module {keyword}", name)
        if key not in self._no_grad:
            index = self._no_grad.get((f"module {keyword} index",))  # name -> files, read once
            if index is None:
                index = {}
                for path in self.paths:
                    for found_name in set(re.findall(rf"(?m)^{keyword} (\w+)", self.text(path))):
                        index.setdefault(found_name, []).append(path)  # type: ignore[union-attr]
                self._no_grad[(f"module {keyword} index",)] = index  # type: ignore[index]
            found = [node for path in index.get(name, ())  # type: ignore[union-attr]
                     for node in (self.tree(path) or ast.Module(body=[])).body
                     if isinstance(node, kind) and node.name == name]  # fmt: skip
            self._no_grad[key] = found[0] if len(found) == 1 else None  # type: ignore[assignment]
        return self._no_grad[key]  # type: ignore[return-value]

    def module_numbers(self, name: str) -> int:
        """How many numbers the list literal holds that one file of the project binds ``name``
        to at its top level (a constant another file imports: ``from kpt_ops import
        SIGMAS``); 0 when no file, or more than one, binds it, or the value is no such list.

        Example:
            >>> project = Project()
            >>> project.add("ops.py", "SIGMAS = [0.26, 0.25, 0.35]\\n")
            >>> project.module_numbers("SIGMAS"), project.module_numbers("OTHER")
            (3, 0)
        """
        key = ("module numbers", name)
        if key not in self._no_grad:
            pattern = re.compile(rf"(?m)^{re.escape(name)}\s*=")
            found = [node.value for path in self.paths if pattern.search(self.text(path))
                     for node in (self.tree(path) or ast.Module(body=[])).body
                     if isinstance(node, ast.Assign)
                     and any(getattr(t, "id", None) == name for t in node.targets)]  # fmt: skip
            self._no_grad[key] = numbers_in_literal(found[0]) if len(found) == 1 else 0  # type: ignore[assignment]
        return self._no_grad[key]  # type: ignore[return-value]

    def runs_argument(self, name: str, position: int | None, keyword: str | None) -> bool:
        """Every ``def name(...)`` in the project (at least one) calls the parameter that an
        argument at ``position`` (after ``self``) or passed as ``keyword`` binds, as
        ``param(...)`` or ``param.forward(...)``, with autograd on (no ``no_grad`` around it or
        on the function): ``predict_batch(model, x)`` in an evaluation loop runs the model.

        Example:
            >>> project = Project()
            >>> project.add("h.py", "def predict_batch(net, x):\\n    return net(x).argmax(1)\\n"
            ...             "def save(net, path):\\n    torch.save(net.state_dict(), path)\\n")
            >>> project.runs_argument("predict_batch", 0, None), project.runs_argument("save", 0, None)
            (True, False)
        """
        key = ("runs argument", name, position, keyword)
        if key in self._no_grad:
            return bool(self._no_grad[key])
        verdicts = [_runs_parameter(node, position, keyword)
                    for node in self.functions_named(name)]  # fmt: skip
        verdict = bool(verdicts) and all(verdicts)
        self._no_grad[key] = verdict  # type: ignore[assignment]
        return verdict
