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

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_count, fmt_ms, location, pct, tree_step_ms

#: ignore recomputation that costs less than this share of the step
MIN_FRACTION = 0.01


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
    step = tree_step_ms(session)
    records = list(session.get("recomputation") or ())
    paths = {str(r.get("path")) for r in records if (r.get("identical_input_calls") or 0) >= 1}
    tree = _tree_ancestors(session.get("tree"))
    advice = []
    for record in records:
        if _has_recomputed_ancestor(str(record.get("path")), paths, tree):
            continue  # caching the ancestor removes these calls too: no double counting
        repeats = float(record.get("identical_input_calls") or 0)
        per_call = float(record.get("time_per_call_ms") or 0.0)
        saving = repeats * per_call
        if repeats < 1 or saving <= 0 or (step > 0 and saving < MIN_FRACTION * step):
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
            f"{fmt_ms(per_call)} per call, so {fmt_ms(saving)} per step recomputed "
            f"({pct(saving, step):.0f}% of the step)",
        ]
        site = record.get("call_site") or {}
        lines = [
            location(place["file"], place.get("line"))
            for place in (site, source)
            if place.get("file") and place.get("line")
        ]
        if site.get("file"):
            code = f": {site['code']}" if site.get("code") else ""
            evidence.append(f"called at {site['file']}:{site.get('line', '?')}{code}")
        if source.get("file"):
            evidence.append(f"defined at {source['file']}:{source.get('line', '?')}")
        advice.append(
            Advice(
                rule="loop-invariant",
                title=f"Compute {path} once and reuse it: its inputs and weights do not change",
                estimated_saving_ms=saving,
                saving_range_ms=[saving, saving],
                confidence="high",
                evidence=evidence,
                fix=f"Its inputs do not change inside the loop: call {path} once before the loop "
                "(e.g. before the denoising steps) and pass the cached output to every iteration.",
                references=["seed 001"],
                heat=min(1.0, saving / step) if step > 0 else 0.0,
                locations=lines,
                code="for t in timesteps:                      # before\n"
                "    out = model(x, t, cond)              # re-encodes cond every step\n"
                "memory = model.encode(cond)              # after: once\n"
                "for t in timesteps:\n"
                "    out = model.decode(x, t, memory)",
            )
        )
    return advice
