"""The user lines under which the model runs: each outermost module call's user frames, with
the call's time charged to every line of them (``session["call_lines"]``).

The hot lines charge a torch call to the innermost user line that makes it, and a module call
to the module tree; neither says what a line that calls a user function costs when that
function runs a model. pytorch/examples' GCN evaluates after each training step with
``loss_train, acc_train = test(model, ...)``: the forward pass runs on line 192 inside
``test()``, and line 181, the call to drop, had no time. In detailed steps the profiler keeps
the user frames of each outermost module call (innermost first, at most :data:`MAX_FRAMES`)
and, once the step is resolved, charges the call's forward time to each of those lines: a
line's figure is the time of the model calls made under it, inclusive, as a flame graph's
frame would be (its own torch calls are in the hot lines). The lint advice reads it for a
finding on a line the hot lines do not time (lint TD712 on GCN's evaluation calls).

Example:
    >>> steps = [{"call_lines": {("/w/main.py", 181, "train_iter", "GCN"): 3_000_000}}, {}]
    >>> row = call_lines_section(steps)[0]
    >>> row["location"], row["ms_per_step"], row["modules"]
    ('main.py:181', 1.5, ['GCN'])
"""

from __future__ import annotations

import linecache
import os
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

import torch

from torchdoctor.collect.syncs_frames import _is_library, _is_third_party, package_of
from torchdoctor.source_names import short_file

#: user frames kept per outermost call (innermost first)
MAX_FRAMES = 8
#: rows kept in session["call_lines"] (the heaviest)
MAX_ROWS = 30
#: installed packages' frames kept per outermost call, below its innermost user frame
MAX_PACKAGE_FRAMES = 24

Line = tuple[str, int, str]  # (file, line, function)


def user_chain(frame: FrameType | None, limit: int = MAX_FRAMES) -> tuple[Line, ...]:
    """The user frames on the stack from ``frame`` outwards (torch's, installed packages' and
    torchdoctor's left out: Lightning's loop is no user line), innermost first, each line once;
    then the installed packages' frames (not torch's), at most MAX_PACKAGE_FRAMES, innermost
    first: Hugging Face's Trainer evaluates inside ``trainer.train()``, the user's only line;
    its ``_maybe_log_save_evaluate`` says what runs. (:func:`call_lines_section` keeps the
    two apart.)

    Example:
        >>> import sys
        >>> def caller():
        ...     return user_chain(sys._getframe())
        >>> [function for _, _, function in caller()][:2]
        ['caller', '<module>']
    """
    chain: list[Line] = []
    packages: list[Line] = []
    while frame is not None and len(chain) < limit:
        code = frame.f_code
        if not (_is_library(code) or _is_third_party(code) or _entry_script(code.co_filename)):
            line = (code.co_filename, frame.f_lineno or 0, code.co_name)
            if line not in chain:
                chain.append(line)
        elif len(packages) < MAX_PACKAGE_FRAMES and _is_third_party(code) and not _is_library(code):
            line = (code.co_filename, frame.f_lineno or 0, code.co_name)
            if line not in packages:  # (a hook caller nested in itself: its line once)
                packages.append(line)
        frame = frame.f_back
    return (*chain, *packages)


def _entry_script(file: str) -> bool:
    """torchdoctor's own console script (``.venv/bin/torchdoctor``): below every run."""
    return os.path.basename(file) == "torchdoctor" and os.sep + "bin" + os.sep in file


def step_call_lines(
    forward: Sequence[Any],
    chains: Sequence[tuple[Line, ...]],
    parent: Sequence[int],
    kinds: Sequence[str],
    names: Sequence[str],
) -> dict[tuple[str, int, str, str], float]:
    """``{(file, line, function, module): ns}`` of one step: each outermost module call's
    forward time charged to each user line of its chain. The outermost calls are the forward
    records of modules with no module above them (regions may be), in the order they ended,
    which is the order they began: they do not nest. When their count differs from the
    chains' (a call begun before the step), nothing is charged.

    Example:
        >>> from torchdoctor.collect.records import ForwardCall
        >>> forward = [ForwardCall(2, 0.0, 5.0), ForwardCall(1, 0.0, 9.0)]
        >>> chain = (("/w/t.py", 9, "evaluate"), ("/w/t.py", 20, "<module>"))
        >>> step_call_lines(forward, [chain], [-1, 0, 1], ["root", "module", "module"],
        ...                 ["", "net", "net.fc"])[("/w/t.py", 20, "<module>", "net")]
        9.0
    """
    outermost = []
    for call in forward:
        node = call[0]
        if call[3] or kinds[node] != "module":  # (a region's piece, a RECOMPUTED forward)
            continue
        above = parent[node]
        while above > 0 and kinds[above] != "module":
            above = parent[above]
        if above <= 0:
            outermost.append(call)
    if not outermost or len(outermost) != len(chains):
        return {}
    out: dict[tuple[str, int, str, str], float] = {}
    for call, chain in zip(outermost, chains):
        spent = float(call[2]) - float(call[1])
        for file, line, function in chain:
            key = (file, line, function, names[call[0]])
            out[key] = out.get(key, 0.0) + spent
    return out


def leading_dim(args: Any) -> int | None:
    """The leading dimension of a call's first positional tensor (its batch, for a model; 1
    for a 1-D tensor, one sample unbatched: a policy given one observation's features), None
    without one.

    A batch dict passed positionally (sentence-transformers' ``self(features)``, a tokenizer's
    ``BatchEncoding``) counts by its first tensor.

    Example:
        >>> import torch
        >>> leading_dim((torch.zeros(1, 4),)), leading_dim((torch.zeros(4),)), leading_dim((3,))
        (1, 1, None)
        >>> leading_dim(({"input_ids": torch.zeros(1, 9), "attention_mask": None},))
        1
    """
    first = args[0] if isinstance(args, tuple) and args else None
    if isinstance(first, Mapping):
        first = next((v for v in first.values() if isinstance(v, torch.Tensor)), None)
    if not isinstance(first, torch.Tensor):
        return None
    with torch._C.DisableTorchFunction():  # (not seen by the hot lines' or the audit's mode)
        if first.dim() == 0 or first.is_nested:
            return None
        return 1 if first.dim() == 1 else int(first.shape[0])


def step_call_counts(
    calls: Sequence[tuple[tuple[Line, ...], int | None, bool]],
) -> dict[Line, list[int]]:
    """``{(file, line, function): [calls, one-sample calls, samples, sized calls, eval calls]}``
    of one step's outermost calls, each ``(its user lines, its first input's leading dimension,
    whether the module was in eval mode)``: how many outermost module calls each user line
    made (inclusive, as :func:`step_call_lines`), how many of them had a first input of
    leading dimension 1 (an environment step, a sampled token: a rollout calls the policy once
    per observation), the sum of the leading dimensions over the calls that had one (a rollout
    of 4 environments calls the policy on 4 observations at a time), and how many ran with the
    model in eval mode (``model.eval()``: an evaluation's calls; a rollout's policy stays in
    training mode).

    Example:
        >>> chain = (("/w/ppo.py", 202, "collect_rollouts"), ("/w/t.py", 7, "<module>"))
        >>> calls = [(chain, 1, False), (chain, 1, False), (chain[1:], 64, True)]
        >>> step_call_counts(calls)[("/w/t.py", 7, "<module>")]
        [3, 2, 66, 3, 1]
    """
    out: dict[Line, list[int]] = {}
    for chain, lead, evaluating in calls:
        for line in chain:
            counts = out.setdefault(line, [0, 0, 0, 0, 0])
            counts[0] += 1
            counts[1] += lead == 1
            if lead is not None:
                counts[2] += lead
                counts[3] += 1
            counts[4] += evaluating
    return out


def call_lines_section(
    steps: Sequence[Mapping[str, Any]], packages: bool = False
) -> list[dict[str, Any]] | None:
    """``session["call_lines"]``: per user line, the mean forward time per step of the
    outermost module calls made under it (over the detailed ``steps``), with the modules
    called; heaviest first. None when no step has any. ``packages``: the installed packages'
    lines instead (see :func:`user_chain`).

    Example:
        >>> call_lines_section([{}]) is None
        True
    """
    if not steps or not any(s.get("call_lines") for s in steps):
        return None
    totals: dict[Line, float] = {}
    modules: dict[Line, dict[str, float]] = {}
    counts: dict[Line, list[int]] = {}
    for step in steps:
        for key, counted in (step.get("call_counts") or {}).items():
            mine_counts = counts.setdefault(key, [0, 0, 0, 0, 0])
            for i, n in enumerate(counted):
                mine_counts[i] += n
        for (file, line, function, module), ns in (step.get("call_lines") or {}).items():
            if (package_of(file) is not None) != packages:
                continue
            key = (file, line, function)
            totals[key] = totals.get(key, 0.0) + ns
            mine = modules.setdefault(key, {})
            mine[module] = mine.get(module, 0.0) + ns
    order = {key: i for i, key in enumerate(totals)}  # (first seen: a chain's order)
    rows = []
    for (file, line, function), ns in sorted(totals.items(), key=lambda kv: -kv[1])[:MAX_ROWS]:
        called = sorted(modules[(file, line, function)].items(), key=lambda kv: -kv[1])
        rows.append({
            "file": file, "line": line, "function": function,
            "location": f"{short_file(file)}:{line}",
            "code": linecache.getline(file, line).strip() if line else "",
            "ms_per_step": ns / len(steps) / 1e6,
            "modules": [name for name, _ in called],
            **_counted(counts.get((file, line, function)), len(steps)),
            # (a package's frames: their place in the first chain, innermost first)
            **({"package": package_of(file), "order": order[(file, line, function)]}
               if packages else {}),
        })  # fmt: skip
    return rows or None


def _counted(counts: list[int] | None, steps: int) -> dict[str, float]:
    """A row's model calls per step, the share of them on one sample, the mean samples per
    call (the first input's leading dimension, over the calls that had one) and the share of
    them with the model in eval mode, when counted.

    Example:
        >>> _counted([1024, 0, 4096, 1024, 256], 2)
        {'calls_per_step': 512.0, 'one_sample_share': 0.0, 'samples_per_call': 4.0, 'eval_share': 0.25}
    """
    if not counts or not counts[0]:
        return {}
    out = {"calls_per_step": counts[0] / steps, "one_sample_share": counts[1] / counts[0]}
    if len(counts) > 3 and counts[3]:
        out["samples_per_call"] = counts[2] / counts[3]
    if len(counts) > 4:
        out["eval_share"] = counts[4] / counts[0]
    return out


def long_step_calls(
    long: Sequence[Mapping[str, Any]], typical: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]] | None:
    """``session["long_step_calls"]``: the rows of :func:`call_lines_section` over the detailed
    steps left out of the tree for their length (``long``: an evaluation every N steps) whose
    model calls took >= 1 ms more per long step than in a typical step (``typical``: the
    detailed steps kept), with that ``extra_ms`` and the typical step's ``typical_ms``: the user
    lines, then the installed packages' (rows with a ``package``: a library's evaluation loop
    under the user's ``trainer.train()``); None without any.

    Example:
        >>> user, loop = ("/w/t.py", 9, "<module>", "net"), "/s/site-packages/lib/loop.py"
        >>> fit, evaluate = (loop, 7, "fit", "net"), (loop, 3, "evaluate", "net")
        >>> rows = long_step_calls([{"call_lines": {user: 9e6, fit: 9e6, evaluate: 5e6}}],
        ...                        [{"call_lines": {user: 4e6, fit: 4e6}}])
        >>> [(r["function"], r["extra_ms"], r["typical_ms"], r.get("new_function")) for r in rows]
        [('<module>', 5.0, 4.0, None), ('fit', 5.0, 4.0, False), ('evaluate', 5.0, 0.0, True)]
    """
    out = []
    for packages in (False, True):
        rows = call_lines_section(typical, packages) or ()
        base = {row["location"]: row["ms_per_step"] for row in rows}
        base_calls = {row["location"]: row.get("calls_per_step", 0.0) for row in rows}
        functions = {(row["file"], row["function"]) for row in rows}
        out += [
            {**row, "extra_ms": row["ms_per_step"] - base.get(row["location"], 0.0),
             "typical_ms": base.get(row["location"], 0.0),
             "typical_calls": base_calls.get(row["location"], 0.0),
             # (a package's function no typical call ran under, at any of its lines)
             **({"new_function": (row["file"], row["function"]) not in functions}
                if packages else {})}
            for row in call_lines_section(long, packages) or ()
        ]  # fmt: skip
    return [row for row in out if row["extra_ms"] >= 1.0] or None
