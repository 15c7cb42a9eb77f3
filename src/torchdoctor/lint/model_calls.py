"""What a call of a model looks like in source: ``model(x)``, ``self.encoder(x)``,
``policy.predict(obs)``; not ``model.named_modules()`` or ``reset_model()``. Shared by the
inference rules (TD602, TD604) and the project index (a helper that runs the model passed to
it).
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.call_index import calls_named
from torchdoctor.lint.syntax import MODEL_NAME

#: callee names that act on modules rather than run one (reset_modules, get_model, ...)
_NOT_A_CALL_OF_A_MODULE = re.compile(
    r"^_*(reset|get|set|init|build|make|create|load|save|copy|prepare|convert|fuse|swap|"
    r"replace|register|check|validate|zero|wrap|apply|to|is|has|find|named|iter|update|clear|"
    r"sync|move|print|log|freeze|unfreeze|count|num|list|all|add|remove|delete|insert|"
    r"extract|from)(_|$)|^(modules|children|"
    r"parameters|buffers)$",
    re.IGNORECASE,
)


def names_a_module(name: str) -> bool:
    """``model``, ``encoder``, ``policy_net``: a module object, called to run it.

    Example:
        >>> names_a_module("policy_net"), names_a_module("reset_model"), names_a_module("loader")
        (True, False, False)
    """
    return bool(MODEL_NAME.search(name)) and not _NOT_A_CALL_OF_A_MODULE.search(name)


FORWARD_METHODS = frozenset(
    {"forward", "predict", "generate", "encode", "decode", "sample", "infer", "inference",
     "logits", "embed", "features"}
)


#: the methods every nn.Module has that move, inspect or switch it, running nothing
_MODULE_API = frozenset({"eval", "train", "cuda", "cpu", "half", "float", "double", "bfloat16",
                         "type", "state_dict", "extra_repr", "requires_grad_", "share_memory",
                         "named_parameters", "named_modules", "named_children",
                         "named_buffers"})  # fmt: skip


def runs_the_module(method: str, evaluated: bool) -> bool:
    """``method`` called on a module runs it: a forward-like name (``push_forward``,
    ``encode_text``), or, on a module the function put in ``eval()`` mode (``evaluated``),
    any method of the project's own that is no module plumbing (``model.doc(ids)``,
    ``model.anomaly_score(x)``: the model's own inference entry points).

    Example:
        >>> runs_the_module("push_forward", False), runs_the_module("doc", True)
        (True, True)
        >>> runs_the_module("doc", False), runs_the_module("state_dict", True)
        (False, False)
    """
    if method in FORWARD_METHODS or method.split("_")[0] in FORWARD_METHODS:
        return True
    if any(part in FORWARD_METHODS for part in method.split("_")[1:]):
        return True
    return evaluated and method not in _MODULE_API and not _NOT_A_CALL_OF_A_MODULE.search(method)


#: a function that trains: a loss, an optimizer, gradients (named or called)
_TRAINS = re.compile(r"(?i)backward|optim|\bopt\b|zero_grad|\.step\(|loss|criterion|\bgrad")


def mc_dropout(function: ast.AST, lines: list[str]) -> bool:
    """A function that puts a model in ``train()`` mode to sample it (Monte Carlo dropout:
    ``model.train()`` keeps dropout on, then a loop of forward passes whose outputs are
    averaged) and trains nothing: no loss, optimizer, backward or gradient anywhere in it.

    Example:
        >>> src = "def mc(model, x):\\n    model.train()\\n    return [model(x) for _ in range(9)]"
        >>> fn = ast.parse(src).body[0]
        >>> mc_dropout(fn, src.splitlines()), mc_dropout(fn, [*src.splitlines(), "loss = 0"])
        (True, False)
    """
    text = "\n".join(lines)
    return ".train()" in text and not _TRAINS.search(text) and not re.search(
        r"(?i)train|fit", getattr(function, "name", ""))


def chain_root(expr: ast.AST) -> ast.AST:
    """``model`` of ``model.to(device).half()``: the receiver a chain of method calls starts at.

    Example:
        >>> ast.unparse(chain_root(ast.parse("model.to(device).half()", mode="eval").body))
        'model'
    """
    while isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
        expr = expr.func.value
    return expr



#: methods that return the module they are called on (``Net(...).to(device)``)
_RETURNS_MODULE = frozenset({"to", "cuda", "cpu", "eval", "train", "half", "float", "double"})


def _module_class(name: str, tree: ast.Module, project) -> bool:
    """``name`` is a class of this file or of the project whose bases name ``Module``."""
    found = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if found is None and project is not None:
        found = project.module_class(name)
    return found is not None and any(
        (ast.unparse(base)).rsplit(".", 1)[-1] == "Module" for base in found.bases
    )


def passed_a_module(rules, call: ast.Call) -> bool:
    """``call`` calls a parameter of its function (``scorer(x)`` in ``def run(scorer, data)``)
    and every call of that function in the file (at least one) passes a name assigned an
    instance of an ``nn.Module`` subclass of the project (``scorer = Ranker(...).to(dev)``):
    it runs a model, whatever the parameter is called.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\nclass Ranker(torch.nn.Module):\\n    pass\\n"
        ...        "def evaluate(r, loader, dev):\\n    outs = []\\n    for x in loader:\\n"
        ...        "        outs.append(r(x.to(dev)))\\n    return outs\\n"
        ...        "def main(data, dev):\\n    r = Ranker().to(dev)\\n    evaluate(r, data, dev)\\n")
        >>> [(f.code, f.line) for f in lint_source(src)]
        [('TD602', 6)]
    """
    tree, scope = rules.context.tree, rules.enclosing_scope(call)
    if not isinstance(call.func, ast.Name) or tree is None or not hasattr(scope, "args"):
        return False
    params = [a.arg for a in (*scope.args.posonlyargs, *scope.args.args)]
    if call.func.id not in params:
        return False
    position, found = params.index(call.func.id), False
    for site in calls_named(rules, scope.name):  # (the file's call index, not a walk)
        if not isinstance(site.func, ast.Name):
            continue
        argument = site.args[position] if position < len(site.args) else None
        values = rules.assigned_values(rules.enclosing_scope(site), argument.id) if isinstance(
            argument, ast.Name) else []  # fmt: skip
        if not all(_builds_a_module(rules, value, tree) for value in values):
            return False
        if not values:
            return False
        found = True
    return found


def _builds_a_module(rules, value: ast.AST, tree: ast.Module, depth: int = 2) -> bool:
    """``Ranker(...).to(dev)``: an instance of a Module class of the project; or the call of a
    function of the file that returns one (``prior = train_prior(args)`` whose ``prior =
    CodePrior(...).to(device)`` it returns: a VQ-VAE's prior, then sampled from)."""
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and (
            value.func.attr in _RETURNS_MODULE):  # fmt: skip
        value = value.func.value
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)):
        return False
    if _module_class(value.func.id, tree, rules.context.project):
        return True
    function = next((n for n in tree.body if isinstance(n, ast.FunctionDef)
                     and n.name == value.func.id), None)  # fmt: skip
    returned = [r.value for r in ast.walk(function) if isinstance(r, ast.Return) and r.value
                is not None] if function is not None and depth > 1 else []  # fmt: skip
    built = [v for r in returned for v in (rules.assigned_values(function, r.id) if isinstance(
        r, ast.Name) else [r])]  # fmt: skip
    return bool(built) and all(_builds_a_module(rules, v, tree, depth - 1) for v in built)
