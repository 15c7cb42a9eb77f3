"""Which loop is a sampler's (a reverse-diffusion or Langevin loop over timesteps or noise
levels), read from source: TD601 and TD603 check its body, TD511 counts its iterations as
steps. The shapes of its iterator (``scheduler.timesteps``, a range walked backwards, a
``torch.linspace`` grid) are ``denoising_loops``'s.
"""

from __future__ import annotations

import ast
from typing import Any

from torchdoctor.lint.denoising_loops import (
    SAMPLING_FUNCTION,
    TIMESTEP_TARGET,
    counts_down,
    descending,
    is_denoising_iter,
    range_call,
    timesteps_read,
    unwrap_iter,
)
from torchdoctor.lint.syntax import target_names
from torchdoctor.lint.visitor import FUNCTIONS, dotted_names_in

#: the grids of timesteps a sampler walks (torch or numpy: LDM's DDIM schedules are numpy)
_STEP_GRIDS = frozenset({"torch.linspace", "torch.arange", "numpy.linspace", "numpy.arange"})


def sampling_loop(rules: Any, node: ast.For) -> bool:
    """A denoising iterator, a grid or range walked backwards whose variable reaches a call
    (NCSN's annealed Langevin, ``for t in range(L - 1, -1, -1)``, in any function), or a loop
    over range(...) with a timestep-like variable in a sampling function (``def sample(...):
    for t in range(steps):``). ``rules`` is the :class:`~torchdoctor.lint.visitor.RuleVisitor`
    asking.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef langevin(net, x, sigmas, c):\\n"
        ...        "    for t in range(len(sigmas) - 1, -1, -1):\\n"
        ...        "        x = x + net(x, t, net.embed(c))\\n    return x\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(4, 'TD601')]
    """
    if is_denoising_iter(node.iter) or is_denoising_iter(_named_iter(rules, node)):
        return True
    # torch.linspace(999, 0, n).long(), also through enumerate/tqdm and a name the
    # function binds once (`ts = torch.linspace(...).long()`; `for i, t in enumerate(ts)`)
    walked = node.iter
    steps = _grid_walked(rules, unwrap_iter(walked))
    if steps is None and range_call(walked) is None:
        walked = _named_iter(rules, node)
        steps = _grid_walked(rules, unwrap_iter(walked))
    if range_call(node.iter) is None and steps is None:
        return False
    down = counts_down(node.iter) or (steps is not None and descending(steps, walked))
    # any loop variable of a range walked backwards (`for i in reversed(range(n))`),
    # else one named like a timestep
    timesteps = {n for n in target_names(node.target) if TIMESTEP_TARGET.match(n) or down}
    timesteps |= timesteps_read(node, frozenset(timesteps if down else ()))  # (t = ts[i])
    if not timesteps:
        return False
    # the timestep must reach a call (the denoiser), as in x = model(x, t): a loop that
    # ignores its variable (MC dropout: `for t in range(n): outs.append(model(x))`) is not
    # a denoising loop
    passed = {
        name
        for call in rules.direct_calls(node.body)
        for arg in [*call.args, *(k.value for k in call.keywords)]
        for name in dotted_names_in(arg)
    }
    if not timesteps & passed:
        return False
    if down:
        return True  # t walks the timesteps backwards into a call: a reverse-diffusion loop
    scope = rules.enclosing_scope(node)
    return isinstance(scope, FUNCTIONS) and bool(SAMPLING_FUNCTION.search(scope.name))


def _grid_walked(rules: Any, it: ast.AST) -> ast.Call | None:
    """The ``torch.linspace`` / ``torch.arange`` call a loop walks (through methods:
    ``.long()``, ``.flip(0)``, ``.tolist()``), or its numpy twin (a DDIM grid,
    ``np.linspace(999, 0, n).astype(int)``), or None."""
    while isinstance(it, ast.Call):
        if rules.callee(it) & _STEP_GRIDS:
            return it
        if not isinstance(it.func, ast.Attribute) or rules.callee(it):
            return None
        it = it.func.value
    return None


def _named_iter(rules: Any, node: ast.For) -> ast.AST:
    """What a loop over a name iterates, through up to two single assignments of the
    function (LDM's ``time_range = np.flip(timesteps)``; ``iterator = tqdm(time_range)``;
    ``for i, step in enumerate(iterator)``); the header itself otherwise."""
    it, scope = node.iter, rules.enclosing_scope(node)
    for _ in range(2):
        name = unwrap_iter(it)
        values = rules.assigned_values(scope, name.id) if isinstance(name, ast.Name) else []
        if len(values) != 1:
            break
        it = values[0]
    return it
