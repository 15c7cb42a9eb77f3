"""Inside a library's loop: which of its lines a user line's sampled time goes to.

A script whose training loop is a library's (``trainer.train()``, ``trainer.fit(model)``)
has one user line for the whole run, so the ``other`` phase's ticks all land on it; what the
user needs is the library's lines in that loop. Each tick keeps the chain of library frames
below the user line (``collect/other_sampler.py``), and the profiler notes the library
functions the forward is entered through: the deepest of those on a tick's chain is the loop's
own function (``_run_epoch``: it calls the model and does the work between steps), and its
frames are the loop's lines, each with its inclusive time and the innermost frame most of it
went to. Without that note, frames that hold (nearly) every tick of the line enclose the loop
(``Trainer.train``, ``_inner_training_loop``) and the lines are one level below the deepest of
them.

Example:
    >>> loop = ("/p/trainer.py", 10, "train")
    >>> chains = {(loop, ("/p/trainer.py", 20, "train"), ("/p/imports.py", 5, "found")): 6,
    ...           (loop, ("/p/trainer.py", 30, "train"), ("/p/acc.py", 7, "clip")): 4}
    >>> [(r["line"], r["share"]) for r in loop_lines(chains)]
    [(20, 0.6), (30, 0.4)]

When one path holds every tick, the line reported is its last frame in the package of the
outermost one (the library whose loop it is), with the innermost frame as ``via``.
"""

from __future__ import annotations

import linecache
from collections.abc import Mapping
from typing import Any

from torchdoctor.collect.syncs_frames import package_of
from torchdoctor.source_names import short_file

#: a frame holding at least this share of the line's ticks encloses the loop
ENCLOSING = 0.9
#: the loop's lines reported (the heaviest)
MAX_LOOP_LINES = 3

Frame = tuple[str, int, str]


def loop_lines(
    chains: Mapping[tuple[Frame, ...], int],
    forward_functions: set[tuple[str, str]] | frozenset = frozenset(),
) -> list[dict[str, Any]]:
    """The loop's own lines in the chains' ticks: ``{file, line, function, location, code,
    share, via}`` heaviest first (``share`` of all the ticks; ``via``: the innermost frame most
    of that line's ticks went to, or None when it is the line itself). Empty when no loop is
    found.

    The loop's function is the deepest frame of the heaviest chain whose function the forward
    was also entered through (``forward_functions``: ``(file, function)``, the profiler notes
    them): the loop calls both the model and the work between steps. Without it, the lines
    one level below the deepest frame holding ENCLOSING of the ticks; when one path holds them
    all, that path's last frame in the package of its outermost frame.

    Example:
        >>> loop = ("/s/site-packages/lib/t.py", 4, "fit")
        >>> chains = {(loop, ("/s/site-packages/lib/t.py", 9, "run")): 3}
        >>> [(r["function"], r["line"], r["package"]) for r in loop_lines(chains, {(loop[0], "fit")})]
        [('fit', 4, 'lib')]
    """
    total = sum(chains.values())
    if total <= 0:
        return []
    depth = loop_depth(chains, forward_functions)
    if depth is None:
        depth = _enclosed_depth(chains, total)
    if depth is None:
        return []
    # the heaviest chain that reaches that depth (the heaviest of all may end above it: the
    # ticks spent in the enclosing frame's own line)
    deep = [(ns, chain) for chain, ns in chains.items() if len(chain) > depth]
    if not deep:
        return []
    heaviest = max(deep, key=lambda item: item[0])[1]
    loop = heaviest[depth][0], heaviest[depth][2]
    at: dict[Frame, int] = {}
    for chain, ns in chains.items():
        if len(chain) > depth and (chain[depth][0], chain[depth][2]) == loop:
            at[chain[depth]] = at.get(chain[depth], 0) + ns
    rows = []
    for frame, ns in sorted(at.items(), key=lambda kv: -kv[1])[:MAX_LOOP_LINES]:
        inner: dict[Frame, int] = {}
        for chain, chain_ns in chains.items():
            if len(chain) > depth + 1 and chain[depth] == frame:
                inner[chain[-1]] = inner.get(chain[-1], 0) + chain_ns
        via = max(inner.items(), key=lambda kv: kv[1])[0] if inner else None
        file, line, function = frame
        rows.append({
            "file": file, "line": line, "function": function, "package": package_of(file),
            "location": _where(file, line),
            "code": linecache.getline(file, line).strip() if line else "",
            "share": round(ns / total, 4),
            "via": None if via is None else {
                "file": via[0], "line": via[1], "function": via[2],
                "location": _where(via[0], via[1]),
            },
        })  # fmt: skip
    return rows


def loop_depth(
    chains: Mapping[tuple[Frame, ...], int], forward_functions: set[tuple[str, str]] | frozenset
) -> int | None:
    """Depth of the deepest frame of the heaviest chain whose function the forward was
    entered through: the loop's function (None when there is none).

    Example:
        >>> chain = (("/s/t.py", 1, "train"), ("/s/t.py", 8, "loop"), ("/s/io.py", 3, "log"))
        >>> loop_depth({chain: 1}, {("/s/t.py", "train"), ("/s/t.py", "loop")})
        1
    """
    if not forward_functions:
        return None
    heaviest = max(chains.items(), key=lambda kv: kv[1])[0]
    found = None
    for depth, (file, _, function) in enumerate(heaviest):
        if (file, function) in forward_functions:
            found = depth
    return found


def _enclosed_depth(chains: Mapping[tuple[Frame, ...], int], total: int) -> int | None:
    """One level below the deepest frame holding ENCLOSING of the ticks (None when none
    does); when one path holds every tick, its last frame in its outermost frame's package."""
    depth = 0
    while True:
        at: dict[Frame, int] = {}
        for chain, ns in chains.items():
            if len(chain) > depth:
                at[chain[depth]] = at.get(chain[depth], 0) + ns
        if not at:
            return _last_in_package(chains)
        if max(at.values()) < ENCLOSING * total:
            return depth or None  # (at depth 0: no frame encloses the ticks)
        depth += 1


def _last_in_package(chains: Mapping[tuple[Frame, ...], int]) -> int:
    """Depth of the deepest frame of the heaviest chain still in the package of its outermost
    frame (``transformers``' ``_clip_grad_norm`` before ``accelerate``'s code)."""
    chain = max(chains.items(), key=lambda kv: kv[1])[0]
    package = package_of(chain[0][0])
    depth = 0
    for i, (file, _, _) in enumerate(chain):
        if package_of(file) != package:
            break
        depth = i
    return depth


def _where(file: str, line: int | None) -> str:
    """``trainer.py:1939``; the file alone when the frame had no line (``f_lineno`` is None
    while some instructions run)."""
    return f"{short_file(file)}:{line}" if line else short_file(file)
