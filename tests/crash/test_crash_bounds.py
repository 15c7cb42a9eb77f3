"""A 100k-step run stays within the stated memory and session-size bounds (docs/profiler.md).

The steps are synthetic (summaries fed to the profiler's store directly, as ``_cut`` does), so
the test is fast; the session is built by the profiler's own session builder.
"""

from __future__ import annotations

import random
import sys
from collections import deque

import torch

import torchdoctor
from torchdoctor.collect import step_store, syncs, syncs_fold
from torchdoctor.collect.assemble import outlier_limit
from torchdoctor.collect.step_store import StepStore, StreamStat
from torchdoctor.session import stat

STEPS = 100_000
KEPT_DETAILED = step_store.FIRST_STEPS + step_store.SAMPLE_DETAILED
#: the stated session.json bound for a small model (docs/profiler.md): independent of steps
SESSION_BYTES = 1_000_000


def _synthetic(rng: random.Random, k: int, nodes: list[int]) -> dict:
    """One detailed step's summary as the profiler makes it (per-node figures)."""
    wall = rng.lognormvariate(2.0, 0.3)
    phases = {"data": 0.1 * wall, "forward": 0.3 * wall, "backward": 0.5 * wall,
              "optimizer": 0.1 * wall, "other": 0.0}  # fmt: skip
    share = 0.3 * wall / len(nodes)
    return {
        "wall_ms": wall, "phases": phases, "peak_memory_bytes": 1000 + k % 7,
        "forward": {n: share for n in nodes}, "backward": {n: 2 * share for n in nodes},
        "calls": {n: 1 for n in nodes}, "activation": None, "identical": {},
    }  # fmt: skip


def _deep_size(value: object) -> int:
    """Bytes of ``value`` and everything it holds (containers, numbers, strings)."""
    seen: set[int] = set()
    stack = [value]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, deque)):
            stack.extend(item)
        elif hasattr(item, "__dict__"):
            stack.append(vars(item))
        elif hasattr(item, "__slots__"):
            stack.extend(getattr(item, name) for name in item.__slots__)
    return total


def test_100k_steps_stay_within_memory_and_session_bounds(tmp_path):
    net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(20)])
    prof = torchdoctor.Profiler(net, syncs=False)
    prof.start()
    net(torch.ones(1, 4)).sum().backward()  # a real step registers the modules' nodes
    prof.step()
    prof.snapshot()  # (the step is summarized into the store, cleared below)
    store = prof.state.summaries
    store.clear()
    nodes = list(range(1, len(prof._rec.parent)))
    rng = random.Random(1)
    walls = []
    for k in range(STEPS):
        summary = _synthetic(rng, k, nodes)
        walls.append(summary["wall_ms"])
        store.append(summary)
        if k == 10_000:
            early = _deep_size(store)
    late = _deep_size(store)
    session = prof.stop()
    # memory: once the store is full it stops growing (a few more histogram buckets at most)
    assert len(store) == KEPT_DETAILED and store.count == STEPS
    assert len(store.recent) <= step_store.RECENT_STEPS
    assert late < 1.05 * early, (early, late)
    assert late < 40_000_000  # ~ 1,000 summaries of a 21-node model

    # the session: every step counted, a bounded list of them, exact count/mean/min/max
    config = session["config"]
    assert config["steps"] == STEPS  # (the real step was cleared with the store)
    assert len(session["steps"]) == KEPT_DETAILED
    indices = [s["index"] for s in session["steps"]]
    assert indices == sorted(set(indices)) and indices[: step_store.FIRST_STEPS] == list(
        range(step_store.FIRST_STEPS)
    )
    assert max(indices) > STEPS // 2  # the sample covers the whole run
    exact = stat(walls)
    assert session["step_ms"]["min"] == exact["min"] and session["step_ms"]["max"] == exact["max"]
    assert abs(session["step_ms"]["mean"] - sum(walls) / len(walls)) < 1e-6
    for key in ("median", "q1", "q3"):  # from the histogram: within 1% of the exact value
        assert abs(session["step_ms"][key] - exact[key]) <= 0.01 * exact[key], key
    kept = sorted(s["wall_ms"] for s in session["steps"])
    typical = [w for w in kept if w <= outlier_limit(kept[len(kept) // 2])]
    if len(typical) < len(kept):  # (a step left out of the tree: the phases are the tree's)
        assert abs(session["phases"]["backward"]["mean"] - 0.5 * exact_mean(typical)) < 1e-6
    else:  # (over every step, streamed: exact)
        assert abs(session["phases"]["backward"]["mean"] - 0.5 * exact_mean(walls)) < 1e-6
    assert config["step_records"]["seen"] == STEPS
    assert any("uniform sample" in note for note in config["notes"])
    # the tree comes from the kept detailed steps, and its invariants hold
    tree = session["tree"]
    assert tree["children"] and tree["children"][0]["total_ms"]["mean"] > 0
    path = session.save(tmp_path / "session.json")
    assert path.stat().st_size < SESSION_BYTES, path.stat().st_size


def exact_mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_until_the_first_steps_are_exceeded_everything_is_exact():
    store = StepStore(first=10, sample_detailed=2, sample_light=2)
    for k in range(10):
        store.append({"wall_ms": float(k), "phases": {"forward": 1.0}})
    assert not store.sampled and len(store) == 10
    assert store.step_stat() == {**stat([float(k) for k in range(10)]), "mean": 4.5}
    store.append({"wall_ms": 3.0, "phases": {}})
    assert store.sampled is False  # the sample still has room
    for _ in range(10):
        store.append({"wall_ms": 3.0, "phases": {}, "detailed": False})
    assert store.sampled and len(store) == 13 and store.count == 21  # 10 + 1 + 2
    assert store.samples[True][0]["index"] == 10  # detailed and light sampled separately


def test_stream_stat_quantiles_are_within_one_percent():
    rng = random.Random(3)
    values = [rng.expovariate(0.1) for _ in range(5000)] + [0.0] * 100
    series = StreamStat()
    for v in values:
        series.add(v)
    exact = stat(values)
    got = series.stat()
    for key in ("median", "q1", "q3"):
        assert abs(got[key] - exact[key]) <= 0.01 * exact[key], key
    assert got["min"] == 0.0 and got["max"] == exact["max"]
    assert len(series.buckets) < 1000  # bounded by the value range, not the count


def test_sync_audit_folds_per_step_events_and_keeps_the_counts(monkeypatch):
    monkeypatch.setattr(syncs, "FOLD_AT", 32)
    monkeypatch.setattr(syncs_fold, "FOLD_AT", 32)
    x = torch.ones(2)
    steps = 300
    with torchdoctor.Profiler(syncs=True, warmup=2, detail="always") as prof:
        for _ in range(steps):
            float(x.sum().item())
            prof.step()
    audit = prof._audit
    assert len(audit._events) <= 2 * 32 + 8  # not one key per step
    records = [r for r in prof.session["syncs"] if r["kind"] != "cuda_sync_warning"]
    item = next(r for r in records if r["line"] and "item()" in r["op"])
    audited = prof.session["config"]["detail"]["audited_count"]  # control steps: audit off
    assert audited == steps - 2  # detail="always" audits its light control steps too
    assert item["count"] == audited and item["per_step"] == 1.0


def test_a_sampled_run_keeps_phases_of_the_steps_the_tree_keeps():
    """nanoGPT (1,500 iterations): the streamed phases held the evaluation step the tree left
    out, and summed to 106% of the tree's step; with the tree's typical steps given, the
    phases stay theirs."""
    store = StepStore(first=3, sample_detailed=2, sample_light=2)
    for k in range(40):
        forward = 120.0 if k == 20 else 10.0  # (one long step, left out of the tree)
        store.append({"wall_ms": forward + 5.0, "phases": {"forward": forward, "backward": 5.0}})
    typical = {"forward": {"median": 10.0, "mean": 10.0}}
    session = {"config": {}, "phases": dict(typical)}
    store.apply_to(session, typical=[{"phases": {"forward": 10.0}}])
    assert session["phases"] == typical and "and the phases come from" in session["config"]["notes"][-1]
    store.apply_to(session)  # (no step left out: the streamed phases over every step)
    assert session["phases"]["forward"]["max"] == 120.0
