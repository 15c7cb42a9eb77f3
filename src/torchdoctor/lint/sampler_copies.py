"""TD606's reading of a sampling loop: the host copies and reads every step makes
(``images.append(x.to('cpu'))``, NCSN's annealed Langevin keeping each corrector step's
sample; ``x.item()``, ``x.numpy()``), each a host-device sync on a GPU run.

Left out: a copy under an ``if`` (``if i % 50 == 0:``, a branch: not every step), one in a
function defined inside the loop, and a loop that carries no sample from step to step (none of
its names is reassigned from a call it is passed to: a script comparing spherical harmonics
over ``range(l, -l - 1, -1)``).
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterator
from typing import Any

from torchdoctor.lint.denoising_loops import SAMPLING_FUNCTION
from torchdoctor.lint.syntax import constant, dotted, method_name

#: methods that copy or read a tensor to the host with no argument
_HOST_READS = frozenset({"cpu", "item", "numpy", "tolist"})


def _to_host(call: ast.Call) -> bool:
    """``x.to('cpu')``, ``x.to(device='cpu')``, ``x.to(torch.device('cpu'))``."""
    if method_name(call) != "to":
        return False
    target = call.args[0] if call.args else next(
        (k.value for k in call.keywords if k.arg == "device"), None)  # fmt: skip
    if isinstance(target, ast.Call) and (dotted(target.func) or "").endswith("device"):
        target = target.args[0] if target.args else None
    return constant(target) == "cpu"


def _calls(node: ast.AST) -> Iterator[tuple[ast.Call, bool]]:
    """Every call under ``node`` with whether an ``if`` encloses it below ``node`` (nested
    loops included: they run every step; nested definitions left out)."""
    stack: list[tuple[ast.AST, bool]] = [(child, False) for child in ast.iter_child_nodes(node)]
    while stack:
        item, guarded = stack.pop()
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(item, ast.Call):
            yield item, guarded
        inner = guarded or isinstance(item, (ast.If, ast.IfExp))
        stack.extend((child, inner) for child in ast.iter_child_nodes(item))


def host_copies(rules: Any, loop: ast.For | ast.While) -> list[ast.Call]:
    """The outermost host copy of each statement ``loop`` runs every step (``x.detach().cpu()
    .numpy()`` once, as its ``.cpu()``).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef sample(net, x, sigmas):\\n    frames = []\\n"
        ...        "    for t in reversed(range(len(sigmas))):\\n        x = x - net(x, t)\\n"
        ...        "        frames.append(x.to('cpu'))\\n        if t % 10 == 0:\\n"
        ...        "            print(x.mean().item())\\n    return frames\\n")
        >>> [(f.line, f.code) for f in lint_source(src, select=['TD606'])]
        [(6, 'TD606')]
    """
    found: dict[int, ast.Call] = {}
    if not _carries_a_sample(loop, _bound_before(rules.enclosing_scope(loop), loop)):
        return []
    for call, guarded in _calls(loop):
        if guarded or not (_to_host(call) or (
                method_name(call) in _HOST_READS and not call.args and not call.keywords)):  # fmt: skip
            continue
        receiver = getattr(call.func, "value", None)
        if method_name(call) in ("item", "tolist", "numpy") and not _made_in(
                _chain_root(receiver), loop):
            continue  # (a NumPy array's .tolist(), a float's .item(): no device)
        statement = rules.parent(call)
        while statement is not None and not isinstance(statement, ast.stmt):
            statement = rules.parent(statement)
        if _decides_a_stop(statement, loop):
            continue  # (a sampled action the loop's Python tests to stop: the host needs it)
        line = getattr(statement, "lineno", call.lineno)
        if line not in found or call.col_offset < found[line].col_offset:
            found[line] = call  # (the first copy of the chain: `x.cpu().numpy()` is its .cpu())
    return [found[line] for line in sorted(found)]


def _decides_a_stop(statement: Any, loop: ast.AST) -> bool:
    """``statement`` assigns a name that an ``if`` of the loop tests before it breaks or
    returns: a GFlowNet's or an RL policy's episode, ``action = cat.sample().item()`` then
    ``if action == 0: break`` (the stop action ends the molecule), the next step built on the
    host from it.

    Example:
        >>> loop = ast.parse("for t in r:\\n    a = d.sample().item()\\n    if a == 0:\\n        break").body[0]
        >>> _decides_a_stop(loop.body[0], loop), _decides_a_stop(loop.body[1], loop)
        (True, False)
    """
    names = {n.id for t in getattr(statement, "targets", ()) for n in ast.walk(t)
             if isinstance(n, ast.Name)}  # fmt: skip
    return bool(names) and any(
        isinstance(branch, ast.If)
        and names & {n.id for n in ast.walk(branch.test) if isinstance(n, ast.Name)}
        and any(isinstance(s, ast.Break | ast.Return) for s in ast.walk(branch))
        for branch in ast.walk(loop)
    )  # fmt: skip


def _chain_root(receiver: Any) -> Any:
    """The name a method chain starts from (``x`` of ``x.norm().item()``)."""
    while isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute):
        receiver = receiver.func.value
    return receiver


def _made_in(receiver: Any, loop: ast.AST) -> bool:
    """A name the loop assigns from something other than a NumPy call (the step's sample)."""
    if not isinstance(receiver, ast.Name):
        return False
    values = [n.value for n in ast.walk(loop) if isinstance(n, ast.Assign | ast.AugAssign)
              and any(isinstance(t, ast.Name) and t.id == receiver.id
                      for t in getattr(n, "targets", [getattr(n, "target", None)]))]  # fmt: skip
    return bool(values) and not any(
        (dotted(c.func) or "").startswith(("np.", "numpy.")) for v in values
        for c in ast.walk(v) if isinstance(c, ast.Call))  # fmt: skip


def _assignments(loop: ast.AST) -> Iterator[tuple[set[str], ast.AST]]:
    """(names bound, value) of each assignment in ``loop``."""
    for node in ast.walk(loop):
        if isinstance(node, ast.Assign):
            yield {t.id for t in node.targets if isinstance(t, ast.Name)}, node.value
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            yield {node.target.id}, node.value


#: roots of library calls that make no step of a sampler (``torch.cat`` accumulating images)
_LIBRARIES = frozenset({"torch", "F", "nn", "np", "numpy", "math", "scipy", "einops"})


def _model_call(call: ast.Call) -> bool:
    """A call that may run a model or a sampler's step: not a builtin (``max(best, err)``) nor
    a library function (``torch.cat((samples, sample))``)."""
    if isinstance(call.func, ast.Name):
        return not hasattr(builtins, call.func.id)
    root = call.func
    while isinstance(root, ast.Attribute):
        root = root.value
    return not (isinstance(root, ast.Name) and root.id in _LIBRARIES)


def _passed(value: ast.AST) -> set[str]:
    """Names passed to the model calls (:func:`_model_call`) in ``value``."""
    return {n.id for call in ast.walk(value) if isinstance(call, ast.Call) and _model_call(call)
            for a in [*call.args, *(k.value for k in call.keywords)]
            for n in ast.walk(a) if isinstance(n, ast.Name)}  # fmt: skip


def _bound_before(scope: ast.AST, loop: ast.AST) -> set[str]:
    """Names the function binds before ``loop``: its parameters and earlier assignments."""
    names = {a.arg for a in ast.walk(getattr(scope, "args", ast.arguments())) if isinstance(a, ast.arg)}
    for node in ast.walk(scope):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and (
                node.lineno < loop.lineno):  # fmt: skip
            names.add(node.id)
    return names


def _carries_a_sample(loop: ast.AST, before: set[str] | None = None) -> bool:
    """A name bound before the loop (``before``; any when None) that the loop reassigns from a
    call (not a builtin) it is passed to: ``x = scheduler.step(unet(x, t), t, x)``, ``x_mod =
    x_mod + step * scorenet(x_mod, labels)``, or through a name the loop binds to such a call
    (NCSN's ``grad = scorenet(x_mod, labels)``; ``x_mod = x_mod + step_size * grad + noise``).
    A name the iteration binds first (HiFi-GAN's ``wav = torch.FloatTensor(wav)`` of each file)
    carries nothing from one step to the next."""
    bound = list(_assignments(loop))
    made_from: dict[str, set[str]] = {}  # name -> the names passed to the call it is bound to
    for names, value in bound:
        for name in names:
            made_from.setdefault(name, set()).update(_passed(value))
    for names, value in bound:
        if before is not None:
            names = names & before
        read = {n.id for n in ast.walk(value) if isinstance(n, ast.Name)}
        if names & _passed(value) or any(names & made_from.get(n, set()) for n in read):
            return True
    return False


#: a Markov-chain sampler's function, beyond the denoising loops' names (NCSN's
#: ``anneal_Langevin_dynamics``, an SGLD or MCMC step)
_CHAIN_FUNCTION = re.compile(r"(?i)langevin|mcmc|sgld|hmc|gibbs|(^|_)anneal")


def iterative_sampler(rules: Any, loop: ast.For | ast.While) -> bool:
    """A loop of a sampling function (by its name) that carries its sample from step to step
    through a model call and trains nothing: NCSN's ``for _ in range(n_steps)`` in
    ``Langevin_dynamics`` and ``for c, sigma in enumerate(sigmas)`` around its corrector steps,
    which the denoising loops' shapes (timesteps, a range walked backwards) leave out.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef langevin(x, net, n):\\n    images = []\\n"
        ...        "    for _ in range(n):\\n        images.append(x.to('cpu'))\\n"
        ...        "        grad = net(x)\\n        x = x + 0.01 * grad\\n    return images\\n")
        >>> [(f.line, f.code) for f in lint_source(src, select=['TD606'])]
        [(5, 'TD606')]
    """
    scope = rules.enclosing_scope(loop)
    name = getattr(scope, "name", "")
    return (bool(SAMPLING_FUNCTION.search(name) or _CHAIN_FUNCTION.search(name))
            and not rules.is_training_body(loop)
            and _carries_a_sample(loop, _bound_before(scope, loop)))  # fmt: skip
