"""Inner loops that repeat training steps on the batch their outer loop made.

PPO's ``for it in range(n_rollouts): seq = sample(policy, ...); ...; for _ in
range(ppo_epochs): <backward, step on seq>``: the outer loop makes one batch and the inner loop
takes a few optimizer steps on it, so what the outer body does runs every few steps (a model
moved to its device, a checkpoint written), not once per epoch.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.syntax import dotted, target_names

FOR = (ast.For, ast.AsyncFor)
_WRAPPERS = {"tqdm", "tqdm.tqdm", "trange", "enumerate"}
#: calls that draw a new batch: next(it), a random index into a replay buffer, a sampler (not a
#: permutation, torch.randperm / np.random.shuffle: the same batch walked in another order, as
#: CleanRL's PPO does at every update epoch)
_DRAWS = re.compile(r"(^|\.)(next|randint|choice|multinomial|sample\w*)$")


def over_range(it: ast.AST) -> bool:
    """``range(...)`` (through ``tqdm`` / ``enumerate``): a count, not data.

    Example:
        >>> over_range(ast.parse("tqdm(range(k))").body[0].value)
        True
        >>> over_range(ast.parse("loader").body[0].value)
        False
    """
    while isinstance(it, ast.Call) and dotted(it.func) in _WRAPPERS and it.args:
        it = it.args[0]
    return isinstance(it, ast.Call) and dotted(it.func) == "range"


def repeats_outer_batch(inner: ast.AST, outer: ast.AST) -> bool:
    """``inner`` (a loop in ``outer``'s body) counts repetitions (``for _ in range(k)``: its
    variable unused, no ``next()`` fetching a batch) and reads a name ``outer``'s body assigned
    from a call before it (the batch the outer iteration made).

    Example:
        >>> src = ("for it in range(n):\\n    seq = sample(policy)\\n"
        ...        "    for _ in range(k):\\n        loss = f(policy(seq))\\n")
        >>> outer = ast.parse(src).body[0]
        >>> repeats_outer_batch(outer.body[1], outer)
        True
        >>> src = ("for ep in range(n):\\n    lr = f(ep)\\n"
        ...        "    for _ in range(k):\\n        x = next(it)\\n        g(x, lr)\\n")
        >>> outer = ast.parse(src).body[0]
        >>> repeats_outer_batch(outer.body[1], outer)
        False
        >>> src = ("for it in range(n):\\n    buf = collect(net)\\n    for step in range(k):\\n"
        ...        "        idx = torch.randint(len(buf), (64,))\\n        f(net(buf[idx]))\\n")
        >>> outer = ast.parse(src).body[0]
        >>> repeats_outer_batch(outer.body[1], outer)
        False
    """
    if not (isinstance(inner, FOR) and over_range(inner.iter)):
        return False
    used = {n.id for s in inner.body for n in ast.walk(s) if isinstance(n, ast.Name)}
    if target_names(inner.target) - {"_"} & used:
        return False
    if any(isinstance(n, ast.Call) and _DRAWS.search(dotted(n.func) or "")
           for s in inner.body for n in ast.walk(s)):  # fmt: skip
        return False  # (a fresh batch each step: next(it), buffer[torch.randint(...)])
    made: set[str] = set()
    for stmt in outer.body:  # type: ignore[attr-defined]
        if stmt is inner:
            break
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
            made |= {n for t in stmt.targets for n in target_names(t)}
        elif isinstance(stmt, ast.With):
            made |= {n for s in stmt.body if isinstance(s, ast.Assign)
                     and isinstance(s.value, ast.Call) for t in s.targets
                     for n in target_names(t)}  # fmt: skip
    return bool(made & used)


def steps_on_its_batches(loop: ast.AST, trains) -> bool:
    """``loop`` (over a range, not over epochs) holds a top-level inner loop that repeats
    training steps (``trains(inner)``, or a loop over minibatch offsets in it) on the batch
    ``loop``'s iteration made.

    Example:
        >>> src = ("for it in range(n):\\n    seq = sample(policy)\\n"
        ...        "    for _ in range(k):\\n        loss = f(policy(seq))\\n")
        >>> steps_on_its_batches(ast.parse(src).body[0], lambda inner: True)
        True
    """
    if not isinstance(loop, FOR) or any("epoch" in n.lower() for n in target_names(loop.target)):
        return False
    body = [s for stmt in loop.body
            for s in (stmt.body if isinstance(stmt, ast.With) else [stmt])]  # fmt: skip
    return any(repeats_outer_batch(s, loop) and (trains(s) or any(
        isinstance(m, FOR) and over_range(m.iter) and trains(m) for m in s.body))
        for s in body)  # fmt: skip  (CleanRL: for start in range(0, n, mb) in each epoch)
