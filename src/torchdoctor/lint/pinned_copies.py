"""TD404's half of the data rules' visitor: the loops over a pinned loader and their
synchronous copies of its batches (``x.to(device)`` without ``non_blocking=True``), through
the loop's names, what the loop unpacks from the batch, and comprehensions over it.

Example:
    >>> from torchdoctor.lint import lint_source
    >>> src = ("from torch.utils.data import DataLoader\\n"
    ...        "loader = DataLoader(ds, num_workers=2, pin_memory=True, persistent_workers=True)\\n"
    ...        "for batch in loader:\\n    x, y = batch\\n    y = y.to(device)\\n")
    >>> [f.code for f in lint_source(src)]
    ['TD404']
"""

from __future__ import annotations

import ast
from typing import Any

from torchdoctor.lint.syntax import same_file_callee
from torchdoctor.lint.visitor import (
    dotted,
    has_star,
    replace_call_with,
    segment,
    target_names,
    with_keyword,
)

#: wrappers a loop puts around a loader: for i, (x, y) in enumerate(tqdm(loader))
LOOP_WRAPPERS = frozenset({"enumerate", "tqdm", "iter", "zip", "track"})
#: methods that read a tensor back to the host (and so wait for everything before them)
_HOST_READS = frozenset({"item", "tolist", "numpy", "cpu"})




class PinnedCopies:
    """The TD404 checks of the loops over a pinned loader (a mixin of the data rules' visitor:
    ``report``, ``direct_calls``, ``parent`` and ``code_of`` are the visitor's).

    Example:
        >>> from torchdoctor.lint.rules_data import DataRules
        >>> issubclass(DataRules, PinnedCopies)
        True
    """

    context: Any
    report: Any
    direct_calls: Any
    parent: Any
    code_of: Any

    def _check_loops(
        self, scope: ast.AST, loader: str, reported: set[int], label: str | None = None
    ) -> None:
        wrapped = {loader} | {  # (pbar = tqdm(train_loader); for x, y in pbar:)
            t.id for a in ast.walk(scope) if isinstance(a, ast.Assign)
            and loader_of(a.value) == loader and isinstance(a.value, ast.Call)
            for t in a.targets if isinstance(t, ast.Name)}  # fmt: skip
        for loop in ast.walk(scope):
            if isinstance(loop, ast.For) and loader_of(loop.iter) in wrapped and not isinstance(
                    loop.body[-1], ast.Break):  # (one batch, then break: glow-tts's data-dependent init)
                self._check_loop(loop, label or f"`{loader}`", reported)

    def _check_loop(self, loop: ast.For, loader: str, reported: set[int]) -> None:
        batch = set(target_names(own_part(loop.target, loop.iter)))
        for stmt in loop.body:  # (HiFi-GAN's `x, y, _, y_mel = batch`; `img = batch["img"]`;
            if not isinstance(stmt, ast.Assign):  # Pytorch-UNet's `images, true_masks =
                continue  # batch['image'], batch['mask']`: each name paired with its value)
            pairs = [(t, stmt.value) for t in stmt.targets] + [
                (e, v) for t in stmt.targets if isinstance(t, ast.Tuple) and isinstance(
                    stmt.value, ast.Tuple) and len(t.elts) == len(stmt.value.elts)
                for e, v in zip(t.elts, stmt.value.elts)]  # fmt: skip
            for target, base in pairs:
                if not isinstance(base, ast.Name | ast.Subscript):
                    continue
                while isinstance(base, ast.Subscript):
                    base = base.value
                if isinstance(base, ast.Name) and base.id in batch:
                    batch |= set(target_names(target))
        deeper = self._copies_one_call_deep(loop, batch)
        for move in [*self.direct_calls(loop.body), *deeper]:
            if not _blocking_copy(move) or self._read_back_at_once(move):
                continue
            base = move.func.value  # type: ignore[attr-defined]
            while isinstance(base, (ast.Subscript, ast.Attribute)):
                base = base.value  # (batch["input_ids"].to(device) too)
            if not (move in deeper or isinstance(base, ast.Name) and (
                    base.id in batch or self._drawn_from(move, base.id, batch))) or (
                    id(move) in reported):  # fmt: skip
                continue
            reported.add(id(move))
            self.report(
                move,
                "TD404",
                f"{loader} pins its batches (pin_memory=True) but `{self.code_of(move)}` "
                "copies them synchronously: pass non_blocking=True so the copy overlaps "
                "the step",
                fix=_with_non_blocking(move, self.context.lines),
            )

    def _read_back_at_once(self, move: ast.Call) -> bool:
        """The statement reads a value computed from the copy back to the host (``(top ==
        y.to(device)).sum().item()``): it waits for the copy anyway, non_blocking gains
        nothing there."""
        node = self.parent(move)
        while isinstance(node, ast.expr):
            if isinstance(node, ast.Call) and (
                    getattr(node.func, "attr", None) in _HOST_READS and not node.args
                    or getattr(node.func, "id", None) in ("float", "int", "bool")):  # fmt: skip
                return True
            node = self.parent(node)
        return False

    def _copies_one_call_deep(self, loop: ast.For, batch: set[str]) -> list[ast.Call]:
        """The calls of a function of this file that the loop hands the batch to
        (``self.process_batch(inputs)``), made on that parameter: ``inputs[key] =
        ipt.to(device)`` in its ``for key, ipt in inputs.items():`` (the parameter, and what
        the function's loops draw from it)."""
        found = []
        for call in self.direct_calls(loop.body):
            function = same_file_callee(call) if isinstance(call, ast.Call) else None
            if function is None or has_star(call):
                continue
            params = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
            params = params[1:] if params[:1] == ["self"] else params
            given = {params[k] for k, a in enumerate(call.args[: len(params)])
                     if isinstance(a, ast.Name) and a.id in batch}  # fmt: skip
            if not given:
                continue
            for inner in ast.walk(function):  # (for key, ipt in inputs.items():)
                if isinstance(inner, ast.For) and _root(inner.iter) in given:
                    given |= set(target_names(inner.target))
            found += [c for c in ast.walk(function) if isinstance(c, ast.Call)
                      and isinstance(c.func, ast.Attribute) and _root(c.func.value) in given]
        return found

    def _drawn_from(self, node: ast.AST, name: str, batch: set[str]) -> bool:
        """``name`` is bound by a comprehension around ``node`` over the batch's entries:
        ``{k: v.to(device) for k, v in batch.items()}`` (Hugging Face's usual copy), or over a
        tuple of the batch's names."""
        parent = self.parent(node)
        while parent is not None and not isinstance(parent, ast.For):
            for gen in getattr(parent, "generators", ()):
                it = gen.iter
                while isinstance(it, (ast.Call, ast.Attribute, ast.Subscript)):
                    it = it.func if isinstance(it, ast.Call) else it.value
                if name in target_names(gen.target) and isinstance(it, ast.Name) and it.id in batch:
                    return True
                if name in target_names(gen.target) and isinstance(it, (ast.Tuple, ast.List)) and any(
                        isinstance(e, ast.Name) and e.id in batch for e in it.elts):  # fmt: skip
                    return True  # (ColBERT's `(t.cuda() for t in (q_ids, q_mask, d_ids))`)
            parent = self.parent(parent)
        return False


def _root(expr: ast.AST) -> str | None:
    """The name under calls, attributes and subscripts: ``inputs`` for ``inputs.items()``."""
    while isinstance(expr, (ast.Call, ast.Attribute, ast.Subscript)):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def loader_of(it: ast.AST) -> str | None:
    """The loader a loop iterates (through enumerate / tqdm / zip's first argument).

    Example:
        >>> loader_of(ast.parse("enumerate(tqdm(train_loader))", mode="eval").body)
        'train_loader'
    """
    while isinstance(it, ast.Call) and (dotted(it.func) or "").rsplit(".", 1)[-1] in LOOP_WRAPPERS:
        if not it.args:
            return None
        it = it.args[0]
    return dotted(it)


def own_part(target: ast.AST, it: ast.AST) -> ast.AST:
    """The part of a loop's target that the batches of ``loader_of(it)`` bind: ``(x, y)`` in
    ``for i, ((x, y), (xv, yv)) in enumerate(zip(train_q, valid_q))`` (DARTS walks a pinned
    and an unpinned loader in step); the whole target when the loop zips nothing.

    Example:
        >>> loop = ast.parse("for i, ((x, y), (xv, yv)) in enumerate(zip(a, b)): pass").body[0]
        >>> sorted(target_names(own_part(loop.target, loop.iter)))
        ['x', 'y']
    """
    part, zipped = target, False
    while isinstance(it, ast.Call) and it.args and (
            (dotted(it.func) or "").rsplit(".", 1)[-1] in LOOP_WRAPPERS):  # fmt: skip
        name = (dotted(it.func) or "").rsplit(".", 1)[-1]
        if isinstance(part, ast.Tuple) and name == "enumerate" and len(part.elts) == 2:
            part = part.elts[1]
        elif isinstance(part, ast.Tuple) and name == "zip" and len(part.elts) == len(it.args):
            part, zipped = part.elts[0], True
        it = it.args[0]
    return part if zipped else target


def _blocking_copy(call: ast.Call) -> bool:
    """``x.to(device)`` / ``x.cuda()`` without ``non_blocking=True`` (``.to(torch.float16)``,
    a dtype alone, is no copy to a device)."""
    if not isinstance(call.func, ast.Attribute) or call.func.attr not in ("to", "cuda"):
        return False
    if any(kw.arg == "non_blocking" for kw in call.keywords) or has_star(call):
        return False
    if call.func.attr == "cuda":
        return True
    if not call.args and not any(kw.arg == "device" for kw in call.keywords):
        return False
    if call.args and isinstance(call.args[0], ast.Constant):  # `.to("cuda")`, `.to("cuda:0")`
        return str(call.args[0].value).split(":")[0] in {"cuda", "xpu", "mps"}
    first = dotted(call.args[0]) if call.args else "device"
    return first is not None and not first.startswith("torch.") and "dtype" not in first


def _with_non_blocking(call: ast.Call, lines: list[str]):
    """The rewrite adding ``non_blocking=True`` to the call (None when its text is unsafe to
    edit: a comment or a line break inside)."""
    source = segment(lines, call) or ""
    if not source.endswith(")") or "#" in source or "\n" in source:
        return None
    return replace_call_with(with_keyword(source, "non_blocking=True"))
