"""The calls a file's step loops make, by the called name: the index behind
:meth:`torchdoctor.lint.project.Project.called_in_loop` (which helper runs every step).

A call ``evaluate(...)`` in a file that defines its own top-level ``evaluate`` calls that
function, not a function of the same name in another file of the project: such a site is
kept under the file's own key too, and told only for that file's function (a GPT-2 script's
``evaluate(model, val)`` is no call of a RetinaNet script's ``evaluate``).
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

from torchdoctor.lint.names import ImportTable
from torchdoctor.lint.project_scan import (
    _SCHEDULER,
    _calls_in_body,
    gated_calls,
    step_calls,
    step_loop,
)
from torchdoctor.lint.tensors import framework_step_method

#: library modules: ``torch.allclose(...)`` / ``F.normalize(...)`` call the library's function,
#: never a project function of the same name
_LIBRARIES = frozenset({"torch", "numpy", "scipy", "math", "einops", "builtins", "os", "sys"})
_BUILTINS, _DEFS = frozenset(dir(builtins)), (ast.FunctionDef, ast.AsyncFunctionDef)

Site = tuple[str, int]


def index_loop_calls(path: str, tree: ast.Module, index: dict) -> None:
    """Add ``path``'s step-loop calls to ``index``: ``name`` -> the first site of any call of
    ``name`` in a step loop; ``("training", name)`` in a loop that calls ``.backward()`` or
    ``.step()``; ``("every step", name)`` such a call under no logging gate. A call of a
    function the file itself defines at its top level is also kept under ``(key, path)``,
    and a call of any other under ``(key, "elsewhere")`` (see :func:`site_for`).

    Example:
        >>> index = {}
        >>> src = "def evaluate(m):\\n    pass\\nfor b in loader:\\n    evaluate(b)\\n    norm(b)\\n"
        >>> index_loop_calls("t.py", ast.parse(src), index)
        >>> index["evaluate"], index[("evaluate", "t.py")], ("evaluate", "elsewhere") in index
        (('t.py', 4), ('t.py', 4), False)
        >>> index[("norm", "elsewhere")]
        ('t.py', 5)
    """
    imports = ImportTable(tree).imports
    modules = {name for name, targets in imports.items() if not all(  # (torch.allclose
        t.split(".")[0] in _LIBRARIES for t in targets)} | {"self"}  # is no call of a
    # (a bare `sum(...)` the file neither defines nor imports is the builtin, not
    # torch.masked's `sum` elsewhere in the project)
    own = {d.name for d in tree.body if isinstance(d, _DEFS)} - set(imports)
    builtin = _BUILTINS - set(imports) - own

    def add(key: str | tuple[str, str], call: ast.Call, site: Site) -> None:
        index.setdefault(key, site)
        local = isinstance(call.func, ast.Name) and call.func.id in own
        index.setdefault((key, path if local else "elsewhere"), site)

    for loop in ast.walk(tree):  # (project's allclose)
        if isinstance(loop, ast.ClassDef):  # a method a framework runs every step
            for method in loop.body:  # (Lightning's training_step): its body is
                if framework_step_method(loop, method):  # a training loop's
                    for call in ast.walk(method):
                        if isinstance(call, ast.Call) and isinstance(
                                call.func, ast.Name) and call.func.id not in builtin:
                            site = (Path(path).name, call.lineno)
                            add(call.func.id, call, site)
                            add(("training", call.func.id), call, site)
        elif isinstance(loop, (ast.For, ast.AsyncFor, ast.While)) and step_loop(loop):
            direct = {id(c) for c in step_calls(loop)}  # (a rollout's inner loop too)
            gated = gated_calls(loop)  # (and a loop that trains itself: no
            steps = any(isinstance(c.func, ast.Attribute) and c.func.attr in (  # epoch
                "backward", "step") and not _SCHEDULER.search(ast.unparse(c.func.value))
                for c in _calls_in_body(loop, nested=False)) and not isinstance(  # loop's
                getattr(loop, "iter", None), ast.List | ast.Tuple | ast.Set)  # sched.step()
            # (nor a test's loop over configurations: `for flag in [True, False]:`)
            trains = any(isinstance(c.func, ast.Attribute) and c.func.attr in (
                "backward", "step") for c in _calls_in_body(loop, nested=False))  # fmt: skip
            for call in _calls_in_body(loop):
                func = call.func
                if isinstance(func, ast.Attribute) and not (
                    isinstance(func.value, ast.Name) and func.value.id in modules
                ):
                    continue  # (`model.train()` is no call of a function `train`)
                called = func.attr if isinstance(func, ast.Attribute) else getattr(
                    func, "id", "")  # fmt: skip
                if isinstance(func, ast.Name) and called in builtin:
                    continue
                site = (Path(path).name, call.lineno)
                add(called, call, site)
                if trains and id(call) in direct:  # (not once an epoch)
                    add(("training", called), call, site)
                    if steps and id(call) not in gated:  # (nor `if step % N == 0:`)
                        add(("every step", called), call, site)


def site_for(index: dict, key: str | tuple[str, str], path: str | None) -> Site | None:
    """The site ``index`` holds for ``key`` as a call of the function of that name in ``path``:
    a call in ``path`` itself, else one in a file that does not define a function of that
    name (it imports it, or calls it through its module); any site when ``path`` is None.

    Example:
        >>> index = {}
        >>> index_loop_calls("gpt.py", ast.parse("def evaluate(m):\\n    pass\\n"
        ...                  "for b in loader:\\n    evaluate(b)\\n"), index)
        >>> site_for(index, "evaluate", "gpt.py"), site_for(index, "evaluate", "det.py")
        (('gpt.py', 4), None)
    """
    if path is None:
        return index.get(key)
    return index.get((key, path)) or index.get((key, "elsewhere"))
