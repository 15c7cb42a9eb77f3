"""Autofixes: rewrites applied only where they are provably behaviour-preserving.

* TD502 ``torch.backends.cuda.sdp_kernel(enable_*=<literal>)`` -> ``sdpa_kernel([SDPBackend...])``
* TD503 ``torch.cuda.amp.autocast(...)`` -> ``torch.amp.autocast("cuda", ...)``
* TD504 ``torch.cuda.amp.GradScaler(...)`` -> ``torch.amp.GradScaler("cuda", ...)``
* TD302 the label-remap loop ``u = torch.unique(y); r = torch.zeros_like(y);
  for i, v in enumerate(u): r[y == v] = i`` -> ``u, r = torch.unique(y, return_inverse=True)``
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import libcst as cst
import libcst.matchers as m
from libcst.codemod import CodemodContext, VisitorBasedCodemodCommand
from libcst.codemod.visitors import AddImportsVisitor, RemoveImportsVisitor
from libcst.metadata import PositionProvider, QualifiedNameProvider

from torchdoctor.lint.visitor import code_of, dotted

_SDP_FLAGS = {  # sdp_kernel keyword -> SDPBackend member, in the order they are listed
    "enable_flash": "FLASH_ATTENTION",
    "enable_mem_efficient": "EFFICIENT_ATTENTION",
    "enable_cudnn": "CUDNN_ATTENTION",
    "enable_math": "MATH",
}
_AUTOCAST_PARAMS = ("enabled", "dtype", "cache_enabled")
_SCALER_PARAMS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval", "enabled")
_NO_SPACE = cst.AssignEqual(
    whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
)


def sdpa_call(call: cst.Call) -> cst.Call | None:
    """The ``sdpa_kernel([...])`` equivalent of an ``sdp_kernel(...)`` call, or None when the
    arguments are not all literal ``enable_*=True/False`` keywords."""
    enabled = dict.fromkeys(_SDP_FLAGS, True)
    for arg in call.args:
        if arg.keyword is None or arg.keyword.value not in _SDP_FLAGS:
            return None
        if not (isinstance(arg.value, cst.Name) and arg.value.value in {"True", "False"}):
            return None
        enabled[arg.keyword.value] = arg.value.value == "True"
    members = [f"SDPBackend.{_SDP_FLAGS[k]}" for k, on in enabled.items() if on]
    if not members:
        return None
    return cst.parse_expression(f"sdpa_kernel([{', '.join(members)}])")


def _keyword_call(
    call: cst.Call, params: Sequence[str], new_func: str, device: str
) -> cst.Call | None:
    args = [cst.Arg(cst.SimpleString(f'"{device}"'))]
    positional = True
    for i, arg in enumerate(call.args):
        if arg.star:
            return None
        if arg.keyword is None:
            if not positional or i >= len(params):
                return None
            args.append(cst.Arg(arg.value, keyword=cst.Name(params[i]), equal=_NO_SPACE))
        else:
            positional = False
            if arg.keyword.value not in params:
                return None
            args.append(arg.with_changes(comma=cst.MaybeSentinel.DEFAULT))
    return cst.Call(func=cst.parse_expression(new_func), args=args)


def autocast_call(call: cst.Call, device: str, torch_name: str) -> cst.Call | None:
    """``torch.amp.autocast(device, ...)`` equivalent of a ``torch.<device>.amp.autocast``
    call, or None when its arguments cannot be mapped."""
    return _keyword_call(call, _AUTOCAST_PARAMS, f"{torch_name}.amp.autocast", device)


def grad_scaler_call(call: cst.Call, device: str, torch_name: str) -> cst.Call | None:
    """``torch.amp.GradScaler(device, ...)`` equivalent of ``torch.<device>.amp.GradScaler``."""
    return _keyword_call(call, _SCALER_PARAMS, f"{torch_name}.amp.GradScaler", device)


# -- TD302 label-remap loop ------------------------------------------------------------------
def _single_assign(stmt: cst.CSTNode) -> tuple[str, cst.BaseExpression] | None:
    if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1):
        return None
    assign = stmt.body[0]
    if not (isinstance(assign, cst.Assign) and len(assign.targets) == 1):
        return None
    name = dotted(assign.targets[0].target)
    return None if name is None else (name, assign.value)


def plan_remap_fix(
    body: Sequence[cst.CSTNode], index: int, qualify: Callable[[cst.CSTNode], set[str]]
) -> list[cst.CSTNode] | None:
    """Replacement statements for ``body[index-2:index+1]`` (unique, zeros_like, loop), or
    None when they are not exactly the idiom. ``qualify`` gives qualified names of a node."""
    from torchdoctor.lint.rules_loops import remap_loop_parts

    loop = body[index]
    parts = remap_loop_parts(loop) if isinstance(loop, cst.For) else None
    if parts is None or index < 2:
        return None
    idx, val, uniq, out, labels = parts
    first, second = _single_assign(body[index - 2]), _single_assign(body[index - 1])
    if first is None or second is None or first[0] != uniq or second[0] != out:
        return None
    if dotted(cst.parse_expression(labels)) is None or labels in {uniq, out} or uniq == out:
        return None
    unique, zeros = first[1], second[1]
    int64 = False  # zeros_like(labels, dtype=torch.long): the inverse indices need no cast
    if isinstance(zeros, cst.Call) and len(zeros.args) == 2:
        extra = zeros.args[1]
        if not (extra.keyword is not None and extra.keyword.value == "dtype"):
            return None
        if not qualify(extra.value) & {"torch.long", "torch.int64"}:
            return None
        zeros, int64 = zeros.with_changes(args=zeros.args[:1]), True
    if not (isinstance(zeros, cst.Call) and len(zeros.args) == 1):
        return None
    if "torch.zeros_like" not in qualify(second[1].func):
        return None
    if zeros.args[0].keyword is not None or code_of(zeros.args[0].value) != labels:
        return None
    if not isinstance(unique, cst.Call):
        return None
    if (
        isinstance(unique.func, cst.Attribute)
        and unique.func.attr.value == "unique"
        and code_of(unique.func.value) == labels
        and not unique.args
    ):
        new_unique = f"{labels}.unique(return_inverse=True)"
    elif (
        "torch.unique" in qualify(unique.func)
        and len(unique.args) == 1
        and unique.args[0].keyword is None
        and code_of(unique.args[0].value) == labels
    ):
        new_unique = f"{code_of(unique.func)}({labels}, return_inverse=True)"
    else:
        return None
    for stmt in (body[index - 1], loop):
        if "#" in code_of(stmt):
            return None  # a comment would be lost
    for later in body[index + 1 :]:  # the loop variables must not be read after the loop
        if any(n.value in {idx, val} for n in m.findall(later, m.Name())):
            return None
    head = cst.parse_statement(f"{uniq}, {out} = {new_unique}\n")
    leading = [*body[index - 2].leading_lines, *body[index - 1].leading_lines, *loop.leading_lines]
    if int64:
        return [head.with_changes(leading_lines=leading)]
    cast = cst.parse_statement(f"{out} = {out}.to({labels}.dtype)\n")
    return [head.with_changes(leading_lines=leading), cast]


def remap_fix_applies(
    loop: cst.For, block: cst.CSTNode | None, qualify: Callable[[cst.CSTNode], set[str]]
) -> bool:
    """True when the TD302 loop ``loop`` in ``block`` has the exact fixable idiom."""
    body = getattr(block, "body", None)
    if not isinstance(body, Sequence):
        return False
    for i, stmt in enumerate(body):
        if stmt is loop:
            return plan_remap_fix(body, i, qualify) is not None
    return False


class _FixCommand(VisitorBasedCodemodCommand):
    METADATA_DEPENDENCIES = (PositionProvider, QualifiedNameProvider)

    def __init__(self, context: CodemodContext, allowed: set[tuple[int, int, str]]) -> None:
        super().__init__(context)
        self.allowed = allowed

    def _allowed(self, node: cst.CSTNode, code: str) -> bool:
        pos = self.get_metadata(PositionProvider, node)
        return (pos.start.line, pos.start.column + 1, code) in self.allowed

    def _qualify(self, node: cst.CSTNode) -> set[str]:
        return {q.name for q in self.get_metadata(QualifiedNameProvider, node, set())}

    def _torch_name(self, func: cst.BaseExpression) -> str:
        root = func
        while isinstance(root, cst.Attribute):
            root = root.value
        if isinstance(root, cst.Name) and func is not root:
            names = {q.name for q in self.get_metadata(QualifiedNameProvider, root, set())}
            if names == {"torch"}:
                return root.value
        AddImportsVisitor.add_needed_import(self.context, "torch")
        return "torch"

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        from torchdoctor.lint.rules_precision import AUTOCAST, GRAD_SCALER, SDP_KERNEL

        names = {q.name for q in self.get_metadata(QualifiedNameProvider, original.func, set())}
        if names & SDP_KERNEL and self._allowed(original, "TD502"):
            new = sdpa_call(updated)
            if new is not None:
                AddImportsVisitor.add_needed_import(
                    self.context, "torch.nn.attention", "SDPBackend"
                )
                AddImportsVisitor.add_needed_import(
                    self.context, "torch.nn.attention", "sdpa_kernel"
                )
                RemoveImportsVisitor.remove_unused_import(
                    self.context, "torch.backends.cuda", "sdp_kernel"
                )
                return new.with_changes(lpar=updated.lpar, rpar=updated.rpar)
        for table, code, build, attr in (
            (AUTOCAST, "TD503", autocast_call, "autocast"),
            (GRAD_SCALER, "TD504", grad_scaler_call, "GradScaler"),
        ):
            hit = names & table.keys()
            if hit and self._allowed(original, code):
                device = table[next(iter(hit))]
                if build(updated, device, "torch") is None:
                    continue
                new = build(updated, device, self._torch_name(original.func))
                RemoveImportsVisitor.remove_unused_import(self.context, f"torch.{device}.amp", attr)
                return new.with_changes(lpar=updated.lpar, rpar=updated.rpar)
        return updated

    def _fix_block(self, original_body, updated_body) -> list[cst.CSTNode] | None:
        out: list[cst.CSTNode] = []
        changed = False
        i = 0
        while i < len(updated_body):
            stmt = updated_body[i]
            orig = original_body[i] if i < len(original_body) else None
            if isinstance(stmt, cst.For) and orig is not None and self._allowed(orig, "TD302"):
                plan = plan_remap_fix(original_body, i, self._qualify)
                if plan is not None:
                    del out[-2:]
                    out.extend(plan)
                    changed = True
                    i += 1
                    continue
            out.append(stmt)
            i += 1
        return out if changed else None

    def leave_IndentedBlock(self, original: cst.IndentedBlock, updated: cst.IndentedBlock):
        body = self._fix_block(original.body, updated.body)
        return updated if body is None else updated.with_changes(body=body)

    def leave_Module(self, original: cst.Module, updated: cst.Module) -> cst.Module:
        body = self._fix_block(original.body, updated.body)
        return updated if body is None else updated.with_changes(body=body)


def apply_fixes(module: cst.Module, allowed: set[tuple[int, int, str]]) -> cst.Module:
    """Apply the fixes whose ``(line, column, code)`` is in ``allowed`` to a parsed module."""
    if not allowed:
        return module
    context = CodemodContext()
    return _FixCommand(context, allowed).transform_module(module)


def fix_source(
    text: str, select: Iterable[str] | None = None, ignore: Iterable[str] | None = None
) -> str:
    """Return ``text`` with every safe autofix applied (findings suppressed by noqa are kept).

    Example:
        >>> print(fix_source("import torch\\ns = torch.cuda.amp.GradScaler()\\n"), end="")
        import torch
        s = torch.amp.GradScaler("cuda")
    """
    from torchdoctor.lint.runner import lint_source

    findings = lint_source(text, select=select, ignore=ignore)
    allowed = {(f.line, f.column, f.code) for f in findings if f.fixable}
    if not allowed:
        return text
    return apply_fixes(cst.parse_module(text), allowed).code
