"""Build the Session of a stopped profiler: config, steps, phases, tree, timeline, syncs.

Called once by ``Profiler`` when it stops; reads the profiler's per-step summaries and node
registry, never measures.

Example:
    >>> import torch, torchdoctor
    >>> net = torch.nn.Linear(2, 2)
    >>> with torchdoctor.Profiler(net, syncs=False) as prof:
    ...     _ = net(torch.ones(1, 2))
    >>> prof.session["config"]["step_boundary"]
    'whole_run'
"""

from __future__ import annotations

from typing import Any

from torchdoctor.collect.aggregate import step_timeline
from torchdoctor.collect.assemble import build_tree, recomputation, stat_with_mean
from torchdoctor.session import Session
from torchdoctor.session_read import PHASES, walk

BOUNDARY_NOTES = {
    "marker": "steps end at torchdoctor.step() / Profiler.step() calls",
    "optimizer": "steps end at optimizer.step() calls",
    "backward": "no optimizer step was seen: steps end at backward() calls",
    "module": "no backward was seen: each call of the outermost module is one step",
    "whole_run": "no step boundary was seen: the whole run is one step",
    "step_fn": "each call of the step function is one step",
}


def knobs_in_use(seen: dict[str, Any]) -> dict[str, Any]:
    """Precision/engine knobs of the profiled run: true, false, or None when nothing says.

    Example:
        >>> knobs_in_use({"autocast": False, "channels_last": None})["autocast"]
        False
    """
    import torch

    precision = torch.get_float32_matmul_precision()
    tf32 = torch.backends.cuda.matmul.allow_tf32 or precision != "highest"
    return {
        "autocast": seen.get("autocast"),
        "channels_last": seen.get("channels_last"),
        "tf32": tf32 if torch.cuda.is_available() else None,
        "compile": None,  # seen from OptimizedModule nodes in the tree (advice/knobs.py)
    }


def build_session(profiler: Any, audit: Any) -> Session:
    """The Session of a stopped ``Profiler`` from its per-step summaries."""
    rec = profiler._rec
    store = profiler._summaries  # a StepStore: the kept steps; every step's figures streamed
    steps = store.kept()
    session = Session.new(profiler.label)
    mode = profiler._mode or "whole_run"
    notes = [BOUNDARY_NOTES.get(mode, mode), *profiler._notes]
    if profiler.memory:
        notes.append("activation bytes are counted on the first profiled step")
    session["environment"]["knobs"] = knobs_in_use(rec.knobs)
    loaders = list(profiler._loaders.values())
    if loaders:  # distinct settings of the DataLoaders iterated during the run
        session["environment"]["data_loaders"] = [
            dict(t) for t in sorted({tuple(sorted(d.items())) for d in loaders})
        ]
    session["config"] = {
        "steps": len(steps),
        "warmup": profiler.warmup,
        "timing": profiler._clock.name,
        "backward_attribution": "graph-hooks" if profiler.backward else "off",
        "step_boundary": mode,
        "syncs": profiler.syncs,
        "memory": profiler.memory,
        "device": profiler.device,
        "notes": notes,
    }
    session["steps"] = [
        {"index": s.get("index", k), "wall_ms": s["wall_ms"], "phases": s["phases"],
         "peak_memory_bytes": s["peak_memory_bytes"]}
        for k, s in enumerate(steps)
    ]  # fmt: skip
    session["phases"] = {
        p: stat_with_mean([s["phases"].get(p, 0.0) for s in steps]) for p in PHASES
    }
    session["step_ms"] = stat_with_mean([s["wall_ms"] for s in steps])
    if steps:
        tree = build_tree(
            steps, parent=rec.parent, path=rec.path, name=rec.name, kind=rec.kind,
            type_name=rec.type, source=rec.source, root_name=profiler.label or "step",
            memory_step=profiler._memory_summary,
        )  # fmt: skip
        session["tree"] = tree
        session["recomputation"] = recomputation(tree, steps, rec.path, rec.call_site)
        session["timeline"] = representative_timeline(profiler)
        _note_profiler_overhead(session, profiler)
    if audit is not None:
        session["syncs"] = audit.records(first_step=profiler.warmup, num_steps=store.count or None)
        session["sync_audit"] = audit.summary()
    store.apply_to(session)  # step time and phases over every step, when some were dropped
    session["interrupted"] = profiler._interrupted
    session["error"] = profiler._error
    return session


#: the profiler's estimated share of the step above which the report says so
OVERHEAD_NOTE_PCT = 5.0


def _note_profiler_overhead(session: Session, profiler: Any) -> None:
    """Estimate the hooks' cost (module calls per step x calibrated cost) into the config and,
    when it is a sizable share of the step, say so in the notes."""
    from torchdoctor.collect.profiler_overhead import estimate_profiler_overhead

    calls = sum(
        float(node.get("calls_per_step") or 0)
        for node, _ in walk(session["tree"])
        if node.get("kind") == "module" and node.get("path")
    )
    backward = profiler.backward and (session["phases"].get("backward") or {}).get("median", 0) > 0
    step = (session.get("step_ms") or {}).get("median") or 0.0
    estimate = estimate_profiler_overhead(calls, step, backward=bool(backward))
    session["config"]["profiler_overhead"] = estimate
    pct = estimate.get("overhead_pct")
    if isinstance(pct, float) and pct >= OVERHEAD_NOTE_PCT:
        session["config"]["notes"].append(
            f"profiler overhead ~{pct:.0f}% of the step (estimated: {calls:g} module calls per "
            f"step x {estimate['cost_us']:.1f} us of hooks each): small modules and their "
            "parents' (self) rows look slower than they are"
        )


def representative_timeline(profiler: Any) -> list[dict[str, Any]]:
    """Timeline of the kept step whose wall time is closest to the median."""
    if not profiler._raw:
        return []
    walls = sorted(r["wall"] for r in profiler._raw)
    median = walls[len(walls) // 2]
    raw = min(profiler._raw, key=lambda r: abs(r["wall"] - median))
    rec = profiler._rec
    depth = [0] * len(rec.parent)
    for node in range(1, len(rec.parent)):
        depth[node] = depth[max(rec.parent[node], 0)] + 1
    return step_timeline(
        raw["intervals"], forward=raw["forward"], segments=raw["segments"], step=raw["step"],
        path=rec.path, kind=rec.kind, depth=depth,
    )  # fmt: skip
