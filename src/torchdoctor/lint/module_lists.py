"""Layers held in lists (``nn.ModuleList`` filled in a loop or by a comprehension) and how a
``forward`` calls them (``for conv, bn in zip(self.convs, self.bns)``, ``self.bns[i](x)``): the
pairs TD506 reads beyond ``self.conv`` / ``self.bn`` attributes.

Example:
    >>> tree = ast.parse("for conv, bn in zip(self.convs, self.bns):\\n    x = bn(conv(x))")
    >>> zipped_layers(tree)
    {'conv': 'self.convs', 'bn': 'self.bns'}
"""

from __future__ import annotations

import ast

from torchdoctor.lint.syntax import dotted, method_name


def appended(call: ast.AST) -> bool:
    """``self.convs.append(layer)``.

    Example:
        >>> appended(ast.parse("self.convs.append(nn.Conv2d(3, 8, 1))").body[0].value)
        True
    """
    return (isinstance(call, ast.Call) and method_name(call) == "append" and len(call.args) == 1
            and not call.keywords)  # fmt: skip


def module_list_item(value: ast.AST) -> ast.AST:
    """The layer a ``nn.ModuleList([nn.Conv2d(...) for ...])`` repeats, else ``value``.

    Example:
        >>> value = ast.parse("nn.ModuleList([nn.BatchNorm1d(w) for w in ws])").body[0].value
        >>> ast.unparse(module_list_item(value))
        'nn.BatchNorm1d(w)'
    """
    if isinstance(value, ast.Call) and (dotted(value.func) or "").endswith("ModuleList") and (
        len(value.args) == 1 and isinstance(value.args[0], (ast.ListComp, ast.GeneratorExp))
    ):
        return value.args[0].elt
    return value


def zipped_layers(forward: ast.AST) -> dict[str, str]:
    """Loop names bound to the layers of zipped lists: ``for conv, bn in zip(self.convs,
    self.bns)`` (or ``enumerate(zip(...))``) gives ``{"conv": "self.convs", "bn": "self.bns"}``;
    also a list walked by itself (``for i, conv in enumerate(self.convs)``) and its partner
    taken at the loop's index (``bn = self.bns[i]``).

    Example:
        >>> tree = ast.parse("for i, (c, b) in enumerate(zip(self.cs, self.bs)): pass")
        >>> zipped_layers(tree)
        {'c': 'self.cs', 'b': 'self.bs'}
    """
    names: dict[str, str] = {}
    for loop in ast.walk(forward):
        if not isinstance(loop, ast.For):
            continue
        target, iterable = loop.target, loop.iter
        if isinstance(iterable, ast.Call) and dotted(iterable.func) == "enumerate" and (
            iterable.args and isinstance(target, ast.Tuple) and len(target.elts) == 2
        ):
            names.update(_indexed_in(loop, target.elts[0]))
            target, iterable = target.elts[1], iterable.args[0]
        if isinstance(target, ast.Name) and isinstance(iterable, ast.Attribute) and dotted(iterable):
            names[target.id] = dotted(iterable) or ""  # (for i, conv in enumerate(self.convs))
        if not (isinstance(iterable, ast.Call) and dotted(iterable.func) == "zip"
                and isinstance(target, ast.Tuple) and len(target.elts) == len(iterable.args)):
            continue  # fmt: skip
        for name, source in zip(target.elts, iterable.args):
            if isinstance(name, ast.Name) and dotted(source):
                names[name.id] = dotted(source) or ""
    return names


def _indexed_in(loop: ast.For, index: ast.AST) -> dict[str, str]:
    """Names the loop's body binds to an item of a list at the loop's index: PointNet++'s
    ``for i, conv in enumerate(self.mlp_convs): bn = self.mlp_bns[i]`` gives ``{"bn":
    "self.mlp_bns"}``.

    Example:
        >>> loop = ast.parse("for i, c in enumerate(self.cs):\\n    b = self.bs[i]").body[0]
        >>> _indexed_in(loop, loop.target.elts[0])
        {'b': 'self.bs'}
    """
    if not isinstance(index, ast.Name):
        return {}
    return {s.targets[0].id: dotted(s.value.value) or "" for s in loop.body
            if isinstance(s, ast.Assign) and len(s.targets) == 1
            and isinstance(s.targets[0], ast.Name) and isinstance(s.value, ast.Subscript)
            and isinstance(s.value.value, ast.Attribute)
            and isinstance(s.value.slice, ast.Name) and s.value.slice.id == index.id}  # fmt: skip


def layer_name(call: ast.Call, zipped: dict[str, str]) -> str:
    """The attribute a called layer comes from: ``self.bn(x)``, a zipped loop name's list,
    ``self.bns[i](x)``'s list.

    Example:
        >>> layer_name(ast.parse("self.bns[i](x)").body[0].value, {})
        'self.bns'
    """
    func = call.func
    if isinstance(func, ast.Name) and func.id in zipped:
        return zipped[func.id]
    if isinstance(func, ast.Subscript):
        func = func.value
    return dotted(func) or ""
