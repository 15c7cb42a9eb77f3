"""Rule ``loop-invariant``: a module called several times per step with identical inputs (seed 001).

The profiler records, per module, how many calls in one step saw inputs identical to an earlier
call (same storage, version counter, shape and dtype): a diffusion sampler's condition encoder,
run once per denoising step although its input never changes. Computing it once and reusing the
result saves ``identical_input_calls x time_per_call`` per step (the remedy removes those calls).
Submodules of a recomputed module are recomputed too; only the outermost one is advised.

Example:
    >>> loop_invariant({"recomputation": []})
    []
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    Advice,
    fmt_count,
    fmt_ms,
    location,
    pct,
    saving_step_ms,
    tree_step_ms,
)
from torchdoctor.session_read import installed_package

#: ignore recomputation that costs less than this share of the step
MIN_FRACTION = 0.01
#: identical calls per step that make a module recomputed: an inference loop's encoder, one
#: call per step, counts 0.9 when one detailed step in ten began a new sample
MIN_REPEATS = 0.5


def invariant_cause(record: Mapping[str, Any]) -> str:
    """The cause of a recomputed module's advice: the line that calls it, so modules recomputed
    from one line are one advice (``self.obs_encoder(self.obs_proj(obs))``: hoisting the line
    caches both), else its path.

    Example:
        >>> invariant_cause({"path": "enc", "call_site": {"file": "/w/m.py", "line": 14}})
        'invariant /w/m.py:14'
        >>> invariant_cause({"path": "enc"})
        'invariant enc'
    """
    site = record.get("call_site") or {}
    if site.get("file") and site.get("line"):
        return f"invariant {site['file']}:{site['line']}"
    return f"invariant {record.get('path')}"


def _tree_ancestors(tree: Mapping[str, Any] | None) -> dict[str, set[str]]:
    """Each node path's ancestor paths in the session tree (the main model's submodules have
    unprefixed paths, so the tree, not the dotted path, says what contains what)."""
    ancestors: dict[str, set[str]] = {}
    stack = [(tree, frozenset())] if isinstance(tree, Mapping) else []
    while stack:
        node, above = stack.pop()
        path = str(node.get("path") or "")
        if path:
            ancestors.setdefault(path, set()).update(above)
            above = above | {path}
        stack.extend((child, above) for child in node.get("children") or ())
    return ancestors


def _has_recomputed_ancestor(path: str, paths: set[str], tree: dict[str, set[str]]) -> bool:
    parts = path.split(".")
    if any(".".join(parts[:i]) in paths for i in range(1, len(parts))):
        return True
    return bool(tree.get(path, set()) & paths)


def loop_invariant(session: Mapping[str, Any]) -> list[Advice]:
    """Advice for each module recomputed on identical inputs within one step.

    Example:
        >>> rec = {"path": "encoder", "calls_per_step": 10, "identical_input_calls": 9,
        ...        "time_per_call_ms": 2.0, "source": None}
        >>> a = loop_invariant({"recomputation": [rec], "step_ms": {"median": 40.0}})[0]
        >>> a.estimated_saving_ms
        18.0
    """
    step, unprofiled = tree_step_ms(session), saving_step_ms(session)
    records = list(session.get("recomputation") or ())
    paths = {str(r.get("path")) for r in records
             if (r.get("identical_input_calls") or 0) >= MIN_REPEATS}  # fmt: skip
    tree = _tree_ancestors(session.get("tree"))
    advice = []
    for record in records:
        if _has_recomputed_ancestor(str(record.get("path")), paths, tree):
            continue  # caching the ancestor removes these calls too: no double counting
        if _inside_library(record):
            continue  # (no line of the user's code makes the repeated call: none to change)
        repeats = float(record.get("identical_input_calls") or 0)
        mean_call = float(record.get("time_per_call_ms") or 0.0)
        repeated = repeat_call_ms(session, record)
        # (calls alike from one line under autograd: caching one drops the others' backward
        # too; a separate repeating line's own forward time is measured, an evaluation's)
        backward = float(record.get("backward_per_call_ms") or 0.0) if repeated is None else 0.0
        per_call = (mean_call if repeated is None else repeated) + backward
        saving = repeats * per_call
        if repeats < MIN_REPEATS or saving <= 0 or (step > 0 and saving < MIN_FRACTION * step):
            continue
        path = record.get("path") or "?"
        calls = record.get("calls_per_step")
        source = record.get("source") or {}
        evidence = [
            f"{path} runs {fmt_count(calls)} times per step; {fmt_count(repeats)} of those calls get inputs "
            f"identical to an earlier call (same storage, version, shape, dtype) and unchanged "
            f"weights"
            if isinstance(calls, (int, float))
            else f"{path}: {fmt_count(repeats)} calls per step with identical inputs",
            f"{fmt_ms(per_call)} per call"
            + (f" (forward {fmt_ms(mean_call)}, backward {fmt_ms(backward)}: the repeated "
               "calls' backward goes with them)" if backward > 0 else "")
            + f", so {fmt_ms(saving)} per step recomputed ({pct(saving, step):.0f}% of the step)"
            + ("" if repeated is None else
               f"; the calls at the repeating line, measured there (the mean over all "
               f"{fmt_count(calls)} calls, {fmt_ms(mean_call)}, counts the others: a training "
               "forward records its graph and runs dropout)"),
        ]
        site = record.get("call_site") or {}
        lines = [
            location(place["file"], place.get("line"))
            for place in (site, source)
            if place.get("file") and place.get("line")
        ]
        repeat = record.get("repeat_site") or {}
        if repeat.get("file"):  # (first: the line to change; reports show the first bullets)
            code = f": {repeat['code']}" if repeat.get("code") else ""
            evidence.append(f"repeated at {repeat['file']}:{repeat.get('line', '?')}{code}")
            lines.insert(0, location(repeat["file"], repeat.get("line")))
        if site.get("file"):
            code = f": {site['code']}" if site.get("code") else ""
            first = "first called" if repeat.get("file") else "called"
            evidence.append(f"{first} at {site['file']}:{site.get('line', '?')}{code}")
        if source.get("file"):
            evidence.append(f"defined at {source['file']}:{source.get('line', '?')}")
        fix, code, references = _remedy(path, source, repeat)
        # (its share of the detailed step, of the step as it runs without the profiler)
        stated = saving / step * unprofiled if step > 0 else saving
        advice.append(
            Advice(
                rule="loop-invariant",
                title=f"Compute {path} once and reuse it: its inputs and weights do not change",
                estimated_saving_ms=stated,
                saving_range_ms=[stated, stated],
                confidence="high",
                evidence=evidence,
                fix=fix,
                references=references,
                heat=min(1.0, saving / step) if step > 0 else 0.0,
                locations=lines,
                code=code,
                cause=invariant_cause(record),  # (lint TD601 on the line that calls it joins)
            )
        )
    return advice


def _inside_library(record: Mapping[str, Any]) -> bool:
    """The repeated call is made by an installed package's own code (its call sites are all
    in one): PyG's SAGEConv applies ``lin_r`` to the same node features in every forward, and
    the link-prediction example's three encodes a step (train, validation, test; different
    edges) read "Compute conv1.lin_r once and reuse it ... before the loop", which no change
    of the script can do. A weight parametrization (torch's own code recomputes it) is told
    ``parametrize.cached()`` and stays.

    Example:
        >>> lib = {"file": "/v/site-packages/torch_geometric/nn/conv/sage_conv.py", "line": 139}
        >>> _inside_library({"path": "conv1.lin_r", "call_site": lib})
        True
        >>> _inside_library({"path": "GAT", "call_site": {"file": "/w/main.py", "line": 262}})
        False
    """
    sites = [s for s in (record.get("call_site"), record.get("repeat_site"))
             if isinstance(s, Mapping) and s.get("file")]  # fmt: skip
    source = str((record.get("source") or {}).get("file") or "").replace("\\", "/")
    if ".parametrizations." in f".{record.get('path')}." or source.endswith(
            "torch/nn/utils/parametrize.py"):  # fmt: skip
        return False
    return bool(sites) and all(installed_package(str(s["file"])) for s in sites)


def repeat_call_ms(session: Mapping[str, Any], record: Mapping[str, Any]) -> float | None:
    """The forward time per call of the line that repeats an earlier call (``repeat_site``),
    from the model calls measured per calling line (``session["call_lines"]``), when that line
    calls this module alone; else None.

    The record's ``time_per_call_ms`` is the module's mean over all its calls: with a training
    forward among them (pytorch/examples' GAT: one training call, then two evaluations under
    no_grad, the second identical to the first) the mean is 1,368 ms where the repeated
    evaluation call took 780 ms. The remedy removes the repeated calls, so their own time is
    the saving.

    Example:
        >>> rec = {"path": "GAT", "time_per_call_ms": 1368.0,
        ...        "repeat_site": {"file": "/w/main.py", "line": 280}}
        >>> line = {"file": "/w/main.py", "line": 280, "modules": ["GAT"],
        ...         "ms_per_step": 1560.0, "calls_per_step": 2.0}
        >>> repeat_call_ms({"call_lines": [line]}, rec)
        780.0
        >>> repeat_call_ms({"call_lines": []}, rec) is None
        True
    """
    site = record.get("repeat_site") or {}
    if not site.get("file") or not site.get("line"):
        return None
    for row in session.get("call_lines") or ():
        if not isinstance(row, Mapping) or row.get("file") != site["file"]:
            continue
        if row.get("line") != site["line"] or list(row.get("modules") or ()) != [record.get("path")]:
            continue
        ms, calls = row.get("ms_per_step"), row.get("calls_per_step")
        if isinstance(ms, (int, float)) and isinstance(calls, (int, float)) and calls > 0 < ms:
            return float(ms) / float(calls)
    return None


def _remedy(
    path: str, source: Mapping[str, Any], repeat: Mapping[str, Any] | None = None
) -> tuple[str, str, list[str]]:
    """(fix, code, references) for a recomputed module: a weight parametrization (weight
    norm, orthogonal, a custom ``register_parametrization``) recomputes its weight at every
    access, which ``parametrize.cached()`` shares across the accesses of one forward pass (an
    RNN's recurrent kernel, a weight used by several calls); anything else is hoisted out of
    the loop; a repeat made from another line than the first call (``repeat``: an evaluation
    that runs the model again on the same inputs, as pytorch/examples' GAT does for its train and
    validation masks) is told to reuse the first call's output there. (Calls separated by a
    backward pass are never counted: the graph is consumed.)

    Example:
        >>> _remedy("GAT", {}, {"file": "/a/main.py", "line": 280, "function": "test"})[0][:42]
        'The call at main.py:280 (in test()) gets t'

        >>> _remedy("a.parametrizations.weight.0", {})[0].startswith("Run the forward pass")
        True
        >>> _remedy("encoder", {})[2]
        ['seed 001']
    """
    file = str(source.get("file") or "").replace("\\", "/")
    if ".parametrizations." in f".{path}." or file.endswith("torch/nn/utils/parametrize.py"):
        return (
            "Run the forward pass under `with torch.nn.utils.parametrize.cached():` - the "
            "parametrized weight is then computed at its first access and reused by every "
            "later access until the block ends (one forward pass; backward() may run inside "
            "it, the optimizer step belongs after it).",
            "out = model(x)                               # before: the weight is\n"
            "                                             # re-parametrized at each use\n"
            "with torch.nn.utils.parametrize.cached():    # after: once per forward\n"
            "    out = model(x)\n"
            "    loss(out).backward()",
            ["torch.nn.utils.parametrize.cached", "seed 001"],
        )
    if repeat and repeat.get("file"):
        where = f"{os.path.basename(str(repeat['file']))}:{repeat.get('line', '?')}"
        return (
            f"The call at {where} (in {repeat.get('function', '?')}()) gets the inputs and "
            f"weights an earlier call of {path} already had: compute the output once and reuse "
            "it there (one forward for every mask or metric read from it).",
            "acc_train = accuracy(model(x)[train_mask])   # before: the model runs twice\n"
            "acc_val = accuracy(model(x)[val_mask])\n"
            "out = model(x)                               # after: once\n"
            "acc_train, acc_val = accuracy(out[train_mask]), accuracy(out[val_mask])",
            ["seed 001"],
        )
    return (
        f"Its inputs do not change inside the loop: call {path} once before the loop "
        "(e.g. before the denoising steps) and pass the cached output to every iteration.",
        "for t in timesteps:                      # before\n"
        "    out = model(x, t, cond)              # re-encodes cond every step\n"
        "memory = model.encode(cond)              # after: once\n"
        "for t in timesteps:\n"
        "    out = model.decode(x, t, memory)",
        ["seed 001"],
    )
