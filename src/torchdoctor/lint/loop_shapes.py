"""Loop shapes the TD1xx/TD3xx rules recognise: a comparison with a value, the label-remap
idiom, the values a loop body derives from one item of a batch."""

from __future__ import annotations

import ast
import re
from collections import Counter

from torchdoctor.lint.syntax import FOR, dotted, dotted_names_in, parent, target_names
from torchdoctor.lint.visitor import method_name, segment


def equality_sides(expr: ast.AST) -> tuple[ast.AST, ast.AST] | None:
    """``(x, v)`` for ``x == v``, ``x.eq(v)`` or ``torch.eq(x, v)``; None otherwise.

    Example:
        >>> [ast.unparse(side) for side in equality_sides(ast.parse("labels.eq(v)", mode="eval").body)]
        ['labels', 'v']
    """
    if isinstance(expr, ast.Compare) and len(expr.ops) == 1 and isinstance(expr.ops[0], ast.Eq):
        return expr.left, expr.comparators[0]
    if (
        isinstance(expr, ast.Call)
        and method_name(expr) == "eq"
        and len(expr.args) == 1
        and not expr.keywords
    ):
        return expr.func.value, expr.args[0]
    if (  # torch.eq(x, v)
        isinstance(expr, ast.Call)
        and method_name(expr) == "eq"
        and dotted(expr.func.value) == "torch"  # type: ignore[attr-defined]
        and len(expr.args) == 2
        and not expr.keywords
    ):
        return expr.args[0], expr.args[1]
    return None


def _masked_write_loop(node: ast.AST, written: int) -> tuple[ast.Name, ast.Name, ast.Subscript, ast.AST] | None:
    """The label-remap loop's shape, ``for A, B in <iter>: Y[L == C] = W``, with ``W`` the
    loop target at position ``written`` and ``C`` the other one: ``(W, C, Y[L == C], L)``,
    else None (the callers check the iterable).

    Example:
        >>> loop = ast.parse("for i, v in enumerate(u):\\n    y[x == v] = i\\n").body[0]
        >>> [ast.unparse(n) for n in _masked_write_loop(loop, 0)]
        ['i', 'v', 'y[x == v]', 'x']
    """
    if not (isinstance(node, ast.For) and isinstance(node.target, ast.Tuple)
            and len(node.target.elts) == 2 and len(node.body) == 1 and not node.orelse):
        return None  # fmt: skip
    write, compared = node.target.elts[written], node.target.elts[1 - written]
    stmt = node.body[0]
    if not (isinstance(write, ast.Name) and isinstance(compared, ast.Name)
            and isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.value, ast.Name) and stmt.value.id == write.id):
        return None  # fmt: skip
    target = stmt.targets[0]
    if not isinstance(target, ast.Subscript) or isinstance(target.slice, (ast.Slice, ast.Tuple)):
        return None
    sides = equality_sides(target.slice)
    if sides is None or not (isinstance(sides[1], ast.Name) and sides[1].id == compared.id):
        return None
    return write, compared, target, sides[0]


def remap_loop_parts(node: ast.AST, lines: list[str]) -> tuple[str, str, str, str, str] | None:
    """For ``for I, V in enumerate(U): Y[L == V] = I`` return ``(I, V, U, Y, L)`` as text.

    Example:
        >>> src = "for i, v in enumerate(uniq):\\n    y[labels == v] = i\\n"
        >>> remap_loop_parts(ast.parse(src).body[0], src.splitlines())
        ('i', 'v', 'uniq', 'y', 'labels')
    """
    parts = _masked_write_loop(node, 0)
    it = getattr(node, "iter", None)
    if parts is None or not (
        isinstance(it, ast.Call)
        and isinstance(it.func, ast.Name)
        and it.func.id == "enumerate"
        and len(it.args) == 1
        and not it.keywords
        and not isinstance(it.args[0], ast.Starred)
    ):
        return None
    index, value, target, labels = parts

    def text(n: ast.AST) -> str:
        return (segment(lines, n) or ast.unparse(n)).strip()

    return (index.id, value.id, text(it.args[0]), text(target.value), text(labels))


#: building a tensor from a Python list
TENSOR_FROM_LIST = frozenset({"torch.tensor", "torch.as_tensor", "torch.LongTensor"})


def mapping_remap_loop(node: ast.AST) -> tuple[ast.Subscript, ast.AST] | None:
    """For ``for K, V in D.items(): Y[L == K] = V`` (a fixed label mapping, Cityscapes' raw
    ids to train ids) return ``(Y[L == K], D)``: one full pass and one masked write per entry
    of the mapping.

    Example:
        >>> src = "for raw, tid in ID_TO_TRAINID.items():\\n    out[label_map == raw] = tid\\n"
        >>> target, mapping = mapping_remap_loop(ast.parse(src).body[0])
        >>> ast.unparse(target), ast.unparse(mapping)
        ('out[label_map == raw]', 'ID_TO_TRAINID')
    """
    parts = _masked_write_loop(node, 1)
    it = getattr(node, "iter", None)
    if parts is None or not (isinstance(it, ast.Call) and method_name(it) == "items"
                             and not it.args):
        return None  # fmt: skip
    return parts[2], it.func.value  # type: ignore[attr-defined]


def per_label_lookup(comp: ast.ListComp) -> ast.AST | None:
    """``[mapping[int(v)] for v in labels]`` / ``[m[v.item()] ...]`` / ``[m[v] for v in
    labels.tolist()]`` / ``[m.get(v, -1) for v in labels.tolist()]``: the element looks each
    label up in a Python container; the lookup (its container: :func:`lookup_container`).

    Example:
        >>> comp = ast.parse("[m[int(v)] for v in y]").body[0].value
        >>> ast.unparse(per_label_lookup(comp))
        'm[int(v)]'
        >>> ast.unparse(per_label_lookup(ast.parse("[m.get(v, -1) for v in y.tolist()]").body[0].value))
        'm.get(v, -1)'
        >>> per_label_lookup(ast.parse("[w[i] * 2 for i in range(3)]").body[0].value) is None
        True
    """
    if len(comp.generators) != 1:
        return None
    gen = comp.generators[0]
    if not isinstance(gen.target, ast.Name):
        return None
    name, elt = gen.target.id, comp.elt
    if isinstance(elt, ast.Subscript):
        key = elt.slice
    elif (isinstance(elt, ast.Call) and method_name(elt) == "get" and 1 <= len(elt.args) <= 2
          and not elt.keywords):
        key = elt.args[0]
    else:
        return None
    read = isinstance(key, ast.Call) and (
        (isinstance(key.func, ast.Name) and key.func.id in {"int", "float"} and len(key.args) == 1
         and isinstance(key.args[0], ast.Name) and key.args[0].id == name)
        or (method_name(key) == "item" and isinstance(key.func.value, ast.Name)  # type: ignore[attr-defined]
            and key.func.value.id == name)  # type: ignore[attr-defined]
    )  # fmt: skip
    copied = isinstance(key, ast.Name) and key.id == name and method_name(gen.iter) == "tolist"
    return elt if read or copied else None


def lookup_container(lookup: ast.AST) -> ast.AST:
    """The container a :func:`per_label_lookup` reads: ``m`` of ``m[v]`` or ``m.get(v, d)``.

    Example:
        >>> ast.unparse(lookup_container(ast.parse("lut.get(v, 0)", mode="eval").body))
        'lut'
    """
    if isinstance(lookup, ast.Subscript):
        return lookup.value
    return lookup.func.value  # type: ignore[attr-defined]


#: an object stepped with actions: ``env.step(a)``, ``envs.step(a)``, ``vec_env.step(a)``
_ENVIRONMENT = re.compile(r"(^|[._])(env|envs|environment|vec_env|venv)$", re.IGNORECASE)


def feeds_an_environment(node: ast.AST, loop: ast.AST) -> bool:
    """Whether the host copy ``node`` is an action handed to an environment in ``loop``: an
    argument of ``env.step(...)``, or assigned to a name such a call takes (``actions =
    q.argmax(1).cpu().numpy()`` then ``envs.step(actions)``). The environment needs the
    values on the host: a sync no metric buffer removes. Parents linked (``link_parents``).

    Example:
        >>> from torchdoctor.lint.syntax import link_parents
        >>> src = "for t in r:\\n    a = q(o).argmax(1).cpu().numpy()\\n    o = envs.step(a)\\n"
        >>> loop = ast.parse(src).body[0]
        >>> _ = link_parents(loop)
        >>> feeds_an_environment(loop.body[0].value, loop)
        True
    """
    child, above = node, parent(node)
    while above is not None and not isinstance(above, ast.stmt):
        if steps_an_environment(above) and child in above.args:
            return True
        child, above = above, parent(above)
    if not isinstance(above, ast.Assign):
        return False
    names = {t.id for t in above.targets if isinstance(t, ast.Name)}
    return bool(names) and any(
        steps_an_environment(call)
        and any(isinstance(n, ast.Name) and n.id in names  # (or an element of it: a_idx[0])
                for a in call.args for n in (a, getattr(a, "value", None)))
        for call in ast.walk(loop)
    )


def steps_an_environment(node: ast.AST) -> bool:
    """``X.step(...)`` where X's name says it is an environment.

    Example:
        >>> steps_an_environment(ast.parse("envs.step(a)", mode="eval").body)
        True
    """
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "step"
        and bool(_ENVIRONMENT.search(dotted(node.func.value) or ""))
    )


#: a scalar id a sequence is compared with (a special token, a padding value)
_TOKEN_ID = re.compile(
    r"(^|_)(id|idx|index|token|token_id|pad|eos|eot|eod|sot|bos|sep|cls|unk|blank)$", re.IGNORECASE
)


def compared_per_sample(invariant: ast.AST, varying: ast.AST, loop: ast.AST) -> bool:
    """Whether ``varying == invariant`` in a loop compares each sample with a constant (a
    literal, an UPPER_CASE name, a special token's id: ``ids == IMAGE_TOKEN_INDEX``,
    ``t == tokenizer.eot``, ``config.pad_token_id``): one mask per sample, not one per value.

    Example:
        >>> eot = ast.parse("tokenizer.eot", mode="eval").body
        >>> compared_per_sample(eot, None, None)
        True
        >>> compared_per_sample(ast.parse("v", mode="eval").body, None, None)
        False
    """
    headers = [loop] if isinstance(loop, ast.For) else list(getattr(loop, "generators", ()))
    if isinstance(varying, ast.Name) and any(
            varying.id in target_names(h.target)
            and dotted(getattr(h.iter, "func", None)) in ("range", "torch.arange")
            for h in headers):  # fmt: skip
        return False  # (`batch_idx == b` for b in range(bs): the loop's values, one mask each)
    if isinstance(invariant, ast.UnaryOp):
        invariant = invariant.operand
    if isinstance(invariant, ast.Constant):
        return True
    name = dotted(invariant)
    last = (name or "").rsplit(".", 1)[-1]
    return bool(last) and (
        last.isupper() or bool(_TOKEN_ID.search(last)) or "config." in (name or "")
    )


#: names of per-layer tensors, of different shapes: no batch to stack
NOT_A_BATCH = re.compile(r"param|weight|layer|module|block|grad", re.IGNORECASE)


def _plain_names(target: ast.AST) -> list[str]:
    """``x`` of ``x = ...``, ``a, b`` of ``a, b = ...``; [] when a target is anything else."""
    elts = target.elts if isinstance(target, ast.Tuple) else [target]
    return [e.id for e in elts] if all(isinstance(e, ast.Name) for e in elts) else []  # type: ignore[attr-defined]


def per_item_names(loop: ast.AST, targets: set[str]) -> dict[str, ast.Subscript]:
    """Names the loop body assigns once from one item of a batch (``x = feats[i] -
    feats[i].mean(0)``, or from such a name: ``xc = x * w``), each with the item it comes
    from; a name read in its own value (``h = h + x[i]``) carries state and is left out.

    Example:
        >>> loop = ast.parse("for i in range(n):\\n    x = f[i] - m\\n    c = x.T @ x\\n").body[0]
        >>> {k: ast.unparse(v) for k, v in per_item_names(loop, {"i"}).items()}
        {'x': 'f[i]', 'c': 'f[i]'}
    """
    body = loop.body if isinstance(loop, FOR) else []
    assigns = [  # (U, S, Vh = torch.linalg.svd(h): each name from the item too)
        (stmt, name)
        for stmt in ast.walk(ast.Module(body=body, type_ignores=[]))
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
        for name in _plain_names(stmt.targets[0])
    ]
    # a name refreshed from itself after this iteration set it (`Vh = Vh.clone()`) is still
    # this item's; read in its own value before that, it carries state from the last one
    counts = Counter(name for stmt, name in assigns if name not in dotted_names_in(stmt.value))
    found: dict[str, ast.Subscript] = {}
    for stmt, name in sorted(assigns, key=lambda a: a[0].lineno):
        names = set(dotted_names_in(stmt.value))
        if counts[name] != 1 or name in names:
            continue
        item = next(
            (
                sub
                for sub in ast.walk(stmt.value)
                if isinstance(sub, ast.Subscript)
                and index_names(sub.slice) & targets
                and not NOT_A_BATCH.search(dotted(sub.value) or "")
            ),
            None,
        )
        item = item or next((found[n] for n in sorted(names) if n in found), None)
        if item is not None:
            found[name] = item
    return found


def index_names(index: ast.AST) -> set[str]:
    """Names an index is made of directly: ``b`` in ``x[b]``, ``x[b, :, :]``, ``x[:, b]``.

    Example:
        >>> sorted(index_names(ast.parse("x[b, :, k]", mode="eval").body.slice))
        ['b', 'k']
    """
    parts = index.elts if isinstance(index, ast.Tuple) else [index]
    return {p.id for p in parts if isinstance(p, ast.Name)}


def made_by_numpy(expr: ast.AST, rules: object, scope: ast.AST, depth: int = 4) -> bool:
    """``expr`` is a NumPy array made in ``scope``: a ``numpy.*`` call, a method, item or
    arithmetic of one, or a name every assignment of which is one (``bi =
    np.floor(np.arange(n) / bs).astype(int)``, then ``bi == i``). ``rules`` is the
    :class:`~torchdoctor.lint.visitor.RuleVisitor` asking (it resolves names).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import numpy as np\\nimport torch\\ndef f(s, n):\\n    a = np.array(s)\\n"
        ...        "    bi = np.arange(len(a)) // 4\\n    for i in range(n):\\n        print(a[bi == i])\\n")
        >>> lint_source(src)
        []
    """
    if depth <= 0:
        return False
    again = lambda e: made_by_numpy(e, rules, scope, depth - 1)  # noqa: E731
    if isinstance(expr, ast.Call):
        if any(n.startswith("numpy.") for n in rules.callee(expr)):  # type: ignore[attr-defined]
            return True
        return isinstance(expr.func, ast.Attribute) and again(expr.func.value)
    if isinstance(expr, (ast.Subscript, ast.Attribute)):
        return again(expr.value)
    if isinstance(expr, ast.BinOp):
        return again(expr.left) or again(expr.right)
    if isinstance(expr, ast.UnaryOp):
        return again(expr.operand)
    if isinstance(expr, ast.Compare):
        return again(expr.left) or any(again(c) for c in expr.comparators)
    if isinstance(expr, ast.Name):
        values = rules.assigned_values(scope, expr.id)  # type: ignore[attr-defined]
        fresh = [v for v in values if expr.id not in dotted_names_in(v)]  # (ar = ar[order])
        return bool(fresh) and all(again(v) for v in fresh)
    return False


#: calls whose output size depends on the data: items that go through them differ in size
_DATA_SIZED = frozenset({"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive"})


def ragged_items(body: list[ast.AST], nodes: list[ast.AST], rules: object) -> bool:
    """The items come out of different sizes, so they do not stack into one batch: a call
    whose size depends on the data (``torch.nonzero(mask[i])``: diffusers' per-sample valid
    prompt tokens), or a slice bounded by a value the body takes per item (``x[i, :cbp]``
    with ``cbp = ctx_begin_pos[i]``: BLIP-Diffusion's context positions).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef f(x, pos):\\n    out = []\\n    for i in range(x.shape[0]):\\n"
        ...        "        p = pos[i]\\n        out.append(x[i, :p].sum(0))\\n    return torch.stack(out)\\n")
        >>> lint_source(src)
        []
    """
    for n in nodes:
        if isinstance(n, ast.Call) and (
            method_name(n) in _DATA_SIZED
            or any(q.rsplit(".", 1)[-1] in _DATA_SIZED for q in rules.callee(n))  # type: ignore[attr-defined]
        ):
            return True
    assigned = {name for stmt in body for t in _targets(stmt) for name in target_names(t)}
    return any(
        isinstance(n, ast.Slice)
        and any(
            isinstance(b, ast.AST) and set(dotted_names_in(b)) & assigned
            for b in (n.lower, n.upper)
        )
        for n in nodes
    )


def _targets(stmt: ast.AST) -> list[ast.AST]:
    """The assignment targets in ``stmt`` and below."""
    return [
        t
        for n in ast.walk(stmt)
        if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
    ]


def summed_per_item(loop: ast.For) -> tuple[str, ast.AST] | None:
    """``(acc, value)`` when the loop's body is the one statement ``acc = acc + value`` or
    ``acc += value`` (value not reading ``acc``): each item's result summed, a reduction the
    batched ops do in one call (a per-sample loss: ``reduction="sum"``), no state carried.

    Example:
        >>> loop = ast.parse("for i in range(n):\\n    loss = loss + f(x[i])\\n").body[0]
        >>> acc, value = summed_per_item(loop)
        >>> acc, ast.unparse(value)
        ('loss', 'f(x[i])')
    """
    if len(loop.body) != 1:
        return None
    stmt = loop.body[0]
    if (isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add)
            and isinstance(stmt.target, ast.Name)):  # fmt: skip
        acc, value = stmt.target.id, stmt.value
    elif (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
          and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.BinOp)
          and isinstance(stmt.value.op, ast.Add)
          and dotted(stmt.value.left) == stmt.targets[0].id):  # fmt: skip
        acc, value = stmt.targets[0].id, stmt.value.right
    else:
        return None
    if any(isinstance(n, ast.Name) and n.id == acc for n in ast.walk(value)):
        return None
    return acc, value


def carries_state(body: list[ast.AST]) -> bool:
    """A name the body reads before (or in the statement where) it assigns it: a state
    carried from one iteration to the next (``h = cell(x[t], h)``, ``total += ...``)."""
    assigned_at: dict[str, int] = {}
    for i, stmt in enumerate(body):
        for n in ast.walk(stmt):
            if isinstance(n, ast.AugAssign):
                # `tmp[..., :2] += r` on a value made earlier in the iteration carries nothing
                base = n.target
                while isinstance(base, (ast.Subscript, ast.Attribute)):
                    base = base.value
                name = base.id if isinstance(base, ast.Name) else None
                if name is None or assigned_at.get(name, i) >= i:
                    return True
            if isinstance(n, ast.Assign):
                for t in n.targets:
                    for name in target_names(t):
                        assigned_at.setdefault(name, i)
    for i, stmt in enumerate(body):
        for n in ast.walk(stmt):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                first = assigned_at.get(n.id)
                if first is not None and i <= first:
                    return True
    return False

