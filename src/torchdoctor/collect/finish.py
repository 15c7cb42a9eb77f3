"""Build the Session of a stopped profiler: config, steps, phases, tree, timeline, syncs.

Called once by ``Profiler`` when it stops, with the profiler's
:class:`~torchdoctor.collect.profiler_state.ProfilerState` (per-step summaries, node registry,
notes); never measures. The tree, recomputation and timeline come from the detailed steps; the
step time and phases from all steps (``collect/schedule.py``).

Example:
    >>> import torch, torchdoctor
    >>> net = torch.nn.Linear(2, 2)
    >>> with torchdoctor.Profiler(net, syncs=False) as prof:
    ...     _ = net(torch.ones(1, 2))
    >>> prof.session["config"]["step_boundary"]
    'whole_run'
"""

from __future__ import annotations

import sys
from typing import Any

from torchdoctor.collect.aggregate import bounded_timeline, step_timeline
from torchdoctor.collect.assemble import (
    BUSY_SHARE,
    TREE_OUTLIER,
    attach_module_facts,
    build_tree,
    own_ms,
    recomputation,
    stat_with_mean,
    typical_steps,
    waited_share,
)
from torchdoctor.collect.call_lines import call_lines_section, long_step_calls
from torchdoctor.collect.finish_overhead import note_profiler_overhead
from torchdoctor.collect.grad_passes import grad_passes_section
from torchdoctor.collect.lines_session import hot_lines_section, point_tree_at_lines
from torchdoctor.collect.long_steps import long_and_busy, outliers, sync_outliers
from torchdoctor.collect.other_sampler import other_lines_section
from torchdoctor.collect.profiler_state import ProfilerState, StepBoundary
from torchdoctor.collect.schedule import index_ranges
from torchdoctor.collect.script_options import script_options
from torchdoctor.collect.unused_outputs import unused_section
from torchdoctor.session import Session
from torchdoctor.session_read import PHASES, fmt_count


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
        "autocast_dtype": seen.get("autocast_dtype"),  # "bfloat16" / "float16" when on
        "channels_last": seen.get("channels_last"),
        "tf32": tf32 if torch.cuda.is_available() else None,
        "compile": None,  # seen from OptimizedModule nodes in the tree (advice/knobs.py)
        # scaled_dot_product_attention called (seen by the sync audit; None: not seen)
        "fused_attention": None,
        # torch.autograd.set_detect_anomaly on at the outermost module calls (None: not seen)
        "anomaly_detection": None,
        # "file.py:line" where the run differentiates a gradient (create_graph=True, then a
        # pass over it: collect/engine_state.note_double_backward); torch.compile refuses it
        "double_backward": seen.get("double_backward"),
    }


def build_session(state: ProfilerState, audit: Any, audits: list[Any] | None = None) -> Session:
    """The Session of a stopped profiler from its collected state and its own sync audit
    (``audits``: every audit that ran under it, for the overhead estimate).

    Example:
        >>> import torch
        >>> from torchdoctor.collect.profiler import Profiler
        >>> net = torch.nn.Linear(2, 2)
        >>> with Profiler(net, syncs=False) as prof:
        ...     for _ in range(3):
        ...         net(torch.ones(1, 2)).sum().backward()
        ...         prof.step()
        >>> session = build_session(prof.state, None)  # what the profiler did when it stopped
        >>> len(session["steps"]), [c["path"] for c in session["tree"]["children"]]
        (3, ['Linear', '(self)'])
    """
    rec = state.recorder
    store = state.summaries  # a StepStore: the kept steps; every step's figures streamed
    steps = store.kept()
    every_wall = [own_ms(s) for s in steps]  # (every kept step's: how often long ones come)
    detailed, stalls = typical_steps(state.detailed_summaries(), every_wall)
    session = Session.new(state.label)
    boundary = state.boundary or StepBoundary.WHOLE_RUN
    notes = [boundary.note, *state.notes]
    if state.memory:
        notes.append("activation bytes are counted on the first profiled step (with gradient "
                     "accumulation, on its first micro-batch)")
    if rec is not None and rec.other_thread_calls:
        notes.append(
            "module calls made on other threads than the profiled loop's (an evaluator, a "
            f"prefetcher; {rec.other_thread_calls} seen in detailed steps) are not in the tree: "
            "their time overlaps the steps"
        )
    session["environment"]["knobs"] = knobs_in_use(rec.knobs)
    if any(getattr(one, "fused_attention", False) for one in [audit, *(audits or ())]):
        session["environment"]["knobs"]["fused_attention"] = True
    if state.compile_step_count:  # torch.compile compiling inside profiled steps
        session["compile"] = {
            "compile_ms": state.compile_ms,
            "steps_with_compile": state.compile_step_count,
            "steps": [{"index": i, "compile_ms": ms} for i, ms in state.compile_steps],
        }
    anomaly = rec.anomaly.summary() if rec is not None else None
    if anomaly is not None:  # anomaly detection left on: its cost per step, measured here
        session["anomaly_detection"] = anomaly
        session["environment"]["knobs"]["anomaly_detection"] = True
    if state.loaders:  # distinct settings of the DataLoaders iterated during the run
        session["environment"]["data_loaders"] = [
            {**_loader_entry(key), "iterators": count,
             "steps": state.loader_steps.get(key, (0, 0))[1],
             **({"starts": state.loader_starts[key]} if state.loader_starts.get(key) else {})}
            for key, count in sorted(state.loaders.items())
        ]  # fmt: skip
    if state.attention_dropout:  # (the dropout advice adds what runs inside SDPA)
        session["environment"]["attention_dropout"] = state.attention_dropout
    unused = unused_section(detailed, rec.path) if rec is not None else []
    if unused:  # (calls whose outputs reached no loss: collect/unused_outputs.py)
        session["unused_outputs"] = unused
    options = script_options()
    if options:  # (run: the script's own switches, which advice names)
        session["environment"]["script_options"] = options
    frameworks = imported_frameworks()
    if frameworks:  # (advice names the switch of the version in use)
        session["environment"]["frameworks"] = frameworks
    if state.optimizers:  # what each optimizer ran as (the optimizer-step rule reads it)
        session["environment"]["optimizers"] = list(state.optimizers.values())
    flags = [s.get("detailed", True) for s in steps]
    detail = dict(state.detail)
    detail["detailed_steps"] = index_ranges(
        [s.get("index", k) for k, (s, flag) in enumerate(zip(steps, flags)) if flag]
    )
    detail["detailed_count"] = store.detailed_count
    if "aimed_steps" in detail:  # (one begun as the run ended was not kept)
        detail["aimed_steps"] = [i for i in detail["aimed_steps"] if i < store.count]
    detail.update(outliers(steps, state.detailed_summaries(), store.unkept_long(), store.count))
    detail["audited_count"] = store.audited_count
    if detail.get("mode") == "windows" and not all(flags):
        waited = detail.get("postponed_steps") or 0
        notes.append(
            f"the module tree and the phases come from {store.detailed_count} detailed step(s) "
            f"of {store.count} (windows; --detail always records every step); the step time from all"
            + (f"; windows waited {waited} step(s) in all to keep detail's cost under "
               f"{detail['budget_pct']:g}% of the run" if waited else "")
        )  # fmt: skip
    children = state.children.note() if state.children is not None else None
    if children:  # the work ran in other processes (a Hogwild trainer)
        notes.append(children)
        if state.children.followed:  # ... profiled on their own (`run`)
            session["children"] = [dict(entry) for entry in state.children.followed]
    long, busy = long_and_busy(stalls, set(detail.get("outlier_steps") or ()))
    if long:
        walls = ", ".join(fmt_count(s["wall_ms"]) for s in long[:5])
        notes.append(
            f"{len(long)} detailed step(s) over {TREE_OUTLIER:g}x the median detailed step "
            f"(they took {walls} ms) left out of the tree, the phases and the hot lines: a stall or the "
            "loop's own periodic work (garbage collection, a checkpoint, an evaluation); the "
            "step time keeps them"
        )
    if busy:
        detail["busy_steps"] = sorted(int(s.get("index", 0)) for s in busy)
        shares = ", ".join(f"{100 * waited_share(s):.0f}%" for s in busy[:5])
        notes.append(
            f"{len(busy)} detailed step(s) whose thread waited for a CPU core over "
            f"{100 * BUSY_SHARE:.0f}% of the time ({shares} of their wall time: other processes "
            "held the cores) left out of the "
            f"tree, the phases and the hot lines, {len(detailed)} quieter ones kept; the step "
            "time keeps them"
        )
    session["config"] = {
        "steps": len(steps),
        "warmup": state.warmup,
        "timing": state.timing,
        "backward_attribution": "graph-hooks" if state.backward else "off",
        "step_boundary": boundary.value,
        "syncs": state.syncs,
        "memory": state.memory,
        "hot_lines": state.hot_lines,
        "device": state.device,
        "detail": detail,
        "notes": notes,
    }
    if state.run_ms:  # where the run's time went: the profiled steps' share of it
        session["config"]["run_time"] = run_time(
            state.run_ms, store.wall.total,
            state.before_ms if state.before_ms is not None else state.warmup_ms,
            state.warmup_compile_ms)  # fmt: skip
        if state.after_calls:  # (the model calls in it: a generation in train mode, grad on)
            session["config"]["run_time"]["after_calls"] = state.after_calls
        if state.dropped_steps:  # (part of before_ms: steps dropped when the boundary moved)
            session["config"]["run_time"].update(dropped_steps=state.dropped_steps,
                                                 dropped_ms=state.dropped_ms)  # fmt: skip
    outer = state.common_step_modules()  # (what most steps called, when others called more)
    if outer:
        session["config"]["outer_modules"] = outer
    session["steps"] = state.step_entries(steps)
    # light steps run without module hooks: their forward is not told from "other"
    session["phases"] = {
        p: stat_with_mean([s["phases"].get(p, 0.0) for s in detailed or steps]) for p in PHASES
    }
    session["step_ms"] = stat_with_mean([s["wall_ms"] for s in steps])
    if detailed:
        tree = build_tree(
            detailed, parent=rec.parent, path=rec.path, name=rec.name, kind=rec.kind,
            type_name=rec.type, source=rec.source, root_name=state.label or "step",
            memory_step=state.memory_summary,
        )  # fmt: skip
        session["tree"] = tree
        attach_module_facts(tree, _module_facts(rec))
        _mark_root_phases(tree, session["phases"])
        session["recomputation"] = recomputation(
            tree, detailed, rec.path, rec.call_site, rec.repeat_site
        )
        session["timeline"] = representative_timeline(state, session["config"]["notes"])
        passes = grad_passes_section(detailed)  # (torch.autograd.grad passes by user line)
        if passes:
            session["grad_passes"] = passes
        try:  # (sampled extras: never worth the session)
            sampled = [s for s in detailed if s.get("lines") is not None]  # (with the lines)
            other = other_lines_section(detailed, "other_lines", state.forward_functions)
            python = other_lines_section(sampled, "python_lines")  # forward: outside torch
        except Exception as error:
            other = python = None
            session["config"]["notes"].append(
                f"the sampled lines were left out ({type(error).__name__}: {error})"
            )
        # no step boundary: the run's lines before and after its model's first call (imports
        # and loading, saving the output; the reports title them so), if a model was called
        # (a script failing before any model call sampled its imports only)
        kept = boundary is not StepBoundary.WHOLE_RUN or any(
            c.get("kind") == "module" for c in tree.get("children") or ()
        )
        if other is not None and kept:
            session["other_lines"] = other
        if python is not None and kept:
            session["python_lines"] = python
        calls = call_lines_section(detailed)  # the user lines each model call ran under
        if calls is not None:
            session["call_lines"] = calls
        later = [s for s in long if int(s.get("index", 2)) >= 2]  # (not warm-up residue)
        if later and (extra := long_step_calls(later, detailed)):  # (an evaluation's calls)
            session["long_step_calls"] = extra
        hot = hot_lines_section(detailed, parent=rec.parent, path=rec.path, kind=rec.kind)
        if hot is not None:  # time per user source line (collect/lines.py)
            session["hot_lines"] = hot
            point_tree_at_lines(session["tree"], hot, session.get("other_lines") or ())
        try:  # (it calibrates: new work at the end of the run, never worth the session)
            note_profiler_overhead(
                session, state, audits or ([audit] if audit else []), rec.registration_ns
            )
        except Exception as error:
            session["config"]["notes"].append(
                f"the profiler's estimate of its own cost failed ({type(error).__name__}: "
                f"{error}); the figures are as measured"
            )
    if audit is not None:
        session["syncs"] = audit.records(
            first_step=state.warmup, num_steps=store.count or None,
            audited_steps=detail["audited_count"] or None, **sync_outliers(session, state.warmup),
        )  # fmt: skip
        session["sync_audit"] = audit.summary()
    store.apply_to(session, typical=detailed if stalls else None)  # (over every step)
    session["interrupted"] = state.interrupted
    session["error"] = state.error
    return session


def _module_facts(rec: Any) -> dict[str, dict[str, Any]]:
    """Per module path, what was read at its first call: parameter count, conv geometry, an
    attention call, a fused-attention switch left off, a trained embedding's lookups (modules made on the fly in a forward, one
    node per class, have none)."""
    facts: dict[str, dict[str, Any]] = {}
    for node, count in rec.state_of.counts().items():  # (of modules alive and freed)
        if node not in rec.made_in_forward:
            facts.setdefault(rec.path[node], {})["params"] = count
    for key, table in (("conv", rec.conv_geometry), ("attention", rec.attention_calls),
                       ("embedding", rec.embedding_calls),
                       ("attention_switch", rec.attention_switches)):  # fmt: skip
        for node, fact in table.items():
            if fact:
                facts.setdefault(rec.path[node], {})[key] = fact
    return facts


def _loader_entry(key: tuple) -> dict[str, Any]:
    """A loader's settings as the session has them: its ``site`` (``engine_state.loader_site``)
    as ``{"file", "function_line", "line"}``.

    Example:
        >>> _loader_entry((("num_workers", 0), ("site", ("/a/t.py", 10, 14))))
        {'num_workers': 0, 'site': {'file': '/a/t.py', 'function_line': 10, 'line': 14}}
    """
    entry = dict(key)
    if "site" in entry:
        file, first, line = entry["site"]
        entry["site"] = {"file": file, "function_line": first, "line": line}
    return entry


def _mark_root_phases(tree: dict[str, Any], phases: dict[str, Any]) -> None:
    """The step's own ``(self)`` row holds the data, optimizer and other phases besides its
    forward and backward rest: its ``phases_ms`` (means) says how much of each, so the tree
    can say "data 11 ms" where a row would otherwise point at a minor hot line.

    Example:
        >>> tree = {"children": [{"kind": "self", "total_ms": {"mean": 12.0}}]}
        >>> _mark_root_phases(tree, {"data": {"mean": 11.0}, "other": {"mean": 0.0}})
        >>> tree["children"][0]["phases_ms"]
        {'data': 11.0}
    """
    row = next((c for c in tree.get("children") or () if c.get("kind") == "self"), None)
    if row is None:
        return
    shares = {p: float((phases.get(p) or {}).get("mean") or 0.0)
              for p in ("data", "optimizer", "other")}  # fmt: skip
    shares = {p: ms for p, ms in shares.items() if ms > 0}
    if shares:
        row["phases_ms"] = shares


def representative_timeline(state: ProfilerState, notes: list[str]) -> list[dict[str, Any]]:
    """Timeline of the kept detailed step whose wall time is closest to the median (bounded:
    ``aggregate.bounded_timeline`` says in ``notes`` what it left out).

    Example:
        >>> import torch
        >>> from torchdoctor.collect.profiler import Profiler
        >>> net = torch.nn.Linear(2, 2)
        >>> with Profiler(net, syncs=False) as prof:
        ...     for _ in range(3):
        ...         net(torch.ones(1, 2)).sum().backward()
        ...         prof.step()
        >>> events = representative_timeline(prof.state, notes=[])
        >>> sorted({f"{e['cat']}:{e['name']}" for e in events})
        ['backward:Linear', 'forward:Linear', 'phase:backward', 'phase:forward', 'phase:other']
    """
    if not state.timelines:
        return []
    walls = sorted(r["wall"] for r in state.timelines)
    median = walls[len(walls) // 2]
    raw = min(state.timelines, key=lambda r: abs(r["wall"] - median))
    rec = state.recorder
    depth = [0] * len(rec.parent)
    for node in range(1, len(rec.parent)):
        depth[node] = depth[max(rec.parent[node], 0)] + 1
    return bounded_timeline(step_timeline(
        raw["intervals"], forward=raw["forward"], segments=raw["segments"], step=raw["step"],
        path=rec.path, kind=rec.kind, depth=depth,
    ), notes)  # fmt: skip


#: training frameworks whose version decides a switch's name (transformers 5 replaced
#: ``group_by_length=True`` with ``train_sampling_strategy="group_by_length"``)
FRAMEWORKS = ("transformers", "accelerate", "lightning", "pytorch_lightning", "diffusers")


def imported_frameworks() -> dict[str, str]:
    """The :data:`FRAMEWORKS` the script imported, with their versions.

    Example:
        >>> import sys, types
        >>> saved = sys.modules.get("diffusers")
        >>> sys.modules["diffusers"] = types.SimpleNamespace(__version__="0.30.0")
        >>> imported_frameworks()["diffusers"]
        '0.30.0'
        >>> sys.modules["diffusers"] = saved
        >>> if saved is None: del sys.modules["diffusers"]
    """
    found = {}
    for name in FRAMEWORKS:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module is not None else None
        if isinstance(version, str):
            found[name] = version
    return found


def run_time(run_ms: float, steps_ms: float, before_ms: float,
             compile_ms: float = 0.0) -> dict[str, float]:  # fmt: skip
    """``config.run_time``: the profiled run's wall time (the profiler's start to its stop),
    its kept steps' total, the time before them (start-up: imports, data, model; and the
    warm-up steps; ``compile_before_ms`` of it torch.compile compiling there, when any), and
    after them (the partial step after the last boundary, any work after the loop, steps past
    ``max_steps``).

    Example:
        >>> run_time(7800.0, 960.0, 6400.0)
        {'total_ms': 7800.0, 'steps_ms': 960.0, 'before_ms': 6400.0, 'after_ms': 440.0}
    """
    after = max(0.0, run_ms - steps_ms - before_ms)
    found = {"total_ms": run_ms, "steps_ms": steps_ms, "before_ms": before_ms, "after_ms": after}
    if compile_ms > 0:  # (torch.compile compiling in the warm-up steps: part of before_ms)
        found["compile_before_ms"] = compile_ms
    return found
