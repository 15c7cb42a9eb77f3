"""Detail windows: full detail in bounded windows of steps, light steps (time, phases) between."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.tree import check_invariants
from torchdoctor.collect.schedule import DetailSchedule
from torchdoctor.session_read import walk


def _loop(prof, net, opt, steps, sync=False):
    x = torch.randn(8, 6)
    for _ in range(steps):
        opt.zero_grad()
        loss = net(x).pow(2).mean()
        loss.backward()
        opt.step()
        if sync:
            loss.item()
        if prof is not None:
            prof.step()


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 16), nn.Tanh()))
    return net, torch.optim.SGD(net.parameters(), lr=0.01)


def _calls(session):
    return {n["path"]: n["calls_per_step"] for n, _ in walk(session["tree"]) if n["path"]}


def test_windows_detail_some_steps_and_the_tree_still_adds_up():
    net, opt = _net()
    with torchdoctor.Profiler(net, syncs=False, window=2, period_steps=5) as prof:
        _loop(prof, net, opt, 12)
    s = prof.session
    detail = s["config"]["detail"]
    assert detail["mode"] == "windows" and detail["detailed_steps"] == [[0, 1], [5, 6], [10, 11]]
    assert detail["detailed_count"] == 6 and len(s["steps"]) == 12
    assert [st["detailed"] for st in s["steps"]].count(True) == 6
    # the tree comes from the detailed steps: it adds up to their step time
    assert check_invariants(s["tree"], step_ms=s["tree"]["total_ms"]["mean"]) == []
    # the step-time distribution comes from all steps, light ones included
    walls = [st["wall_ms"] for st in s["steps"]]
    assert s["step_ms"]["min"] == min(walls) and s["step_ms"]["max"] == max(walls)
    # every step's phases add up to it; light steps (no module hooks) fold forward into other
    for step in s["steps"]:
        assert sum(step["phases"].values()) == pytest.approx(step["wall_ms"], rel=1e-6)
        assert step["phases"]["backward"] > 0
        assert (step["phases"]["forward"] > 0) == step["detailed"]
    # the phases come from the detailed steps
    forward = sorted(st["phases"]["forward"] for st in s["steps"] if st["detailed"])
    assert s["phases"]["forward"]["min"] == forward[0] > 0
    assert any("6 detailed step(s) of 12" in note for note in s["config"]["notes"])
    # the same calls per step as when every step is detailed
    net2, opt2 = _net()
    with torchdoctor.Profiler(net2, syncs=False, detail="always") as always:
        _loop(always, net2, opt2, 4)
    assert always.session["config"]["detail"]["detailed_count"] == 4
    assert _calls(s) == _calls(always.session)


def test_light_steps_run_without_module_hooks():
    from torch.nn.modules import module

    net, opt = _net()
    before = len(module._global_forward_pre_hooks)
    with torchdoctor.Profiler(net, syncs=False, window=1, period_steps=50) as prof:
        _loop(prof, net, opt, 1)
        assert len(module._global_forward_pre_hooks) == before  # step 1: light
        _loop(prof, net, opt, 2)
    assert len(module._global_forward_pre_hooks) == before
    assert prof.session["config"]["detail"]["detailed_steps"] == [[0, 0]]


def test_sync_audit_is_paused_outside_windows_and_counts_per_audited_step():
    net, opt = _net()
    with torchdoctor.Profiler(net, window=2, period_steps=6) as prof:
        _loop(prof, net, opt, 12, sync=True)
    s = prof.session
    assert s["config"]["detail"]["audited_count"] == 4
    [record] = [r for r in s["syncs"] if r["kind"] == "item"]
    assert record["count"] == 4 and record["per_step"] == 1.0


def test_auto_boundary_revision_reopens_a_window():
    """Steps dropped when the boundary is decided must not leave the tree empty."""
    net, opt = _net()
    x = torch.randn(8, 6)
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", window=1,
                              period_steps=50) as prof:  # fmt: skip
        for _ in range(8):
            opt.zero_grad()
            net(x).sum().backward()
            opt.step()
    s = prof.session
    assert s["config"]["step_boundary"] == "optimizer"
    assert s["config"]["detail"]["detailed_count"] >= 1 and s["tree"]["children"]


def test_overhead_estimate_names_its_parts():
    net, opt = _net()
    with torchdoctor.Profiler(net, syncs=False, window=2, period_steps=5) as prof:
        _loop(prof, net, opt, 8)
    estimate = prof.session["config"]["profiler_overhead"]
    assert estimate["cost_us"] > 0 and estimate["overhead_ms"] > 0
    assert estimate["light_cost_us"] is None  # light steps run without module hooks
    assert estimate["run_overhead_ms"] > 0 and estimate["bookkeeping_ms_per_step"] > 0
    # the run's cost: the detailed steps' hooks, the bookkeeping of all 8 steps, and the
    # modules' registration at their first call (measured, once)
    assert prof.session["config"]["detail"]["detailed_count"] == 4  # steps 0, 1, 5, 6
    assert estimate["registration_ms"] > 0
    # ... and the phase and step events of every step (optimizer, backward), measured
    assert estimate["event_ms"] > 0
    expected = (4 * estimate["overhead_ms"] + 8 * estimate["bookkeeping_ms_per_step"]
                + estimate["registration_ms"] + estimate["event_ms"])  # fmt: skip
    assert estimate["run_overhead_ms"] == pytest.approx(expected)


def test_schedule_periods_in_steps_and_seconds():
    by_time = DetailSchedule("windows", window=1, period_steps=100, period_s=10.0)
    flags = [by_time.detailed(i, now_s=4.0 * i) for i in range(6)]
    assert flags == [True, False, False, True, False, False]  # a window every 12 s >= 10 s
    always = DetailSchedule("always")
    assert all(always.detailed(i, 0.0) for i in range(16))
    light = [i for i in range(296) if not always.detailed(i, 0.0)]  # control steps
    assert len(light) == (296 - 16) // 8 and all(i >= 16 for i in light)  # one per block


@pytest.mark.parametrize(
    "options", [{"mode": "sometimes"}, {"window": 0}, {"window": 5, "period_steps": 3}]
)
def test_schedule_rejects_bad_options(options):
    mode = options.pop("mode", "windows")
    with pytest.raises(ValueError, match="detail|window"):
        DetailSchedule(mode, **options)


def test_profiler_rejects_an_unknown_detail_mode():
    with pytest.raises(ValueError, match="detail must be one of"):
        torchdoctor.Profiler(detail="sometimes")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_overhead_estimators_do_not_import_what_uses_them():
    """No cycles profiler <-> finish <-> profiler_overhead, syncs <-> syncs_overhead."""
    collect = Path(torchdoctor.__file__).parent / "collect"
    assert "torchdoctor.collect.profiler" not in _imports(collect / "profiler_overhead.py")
    assert "torchdoctor.collect.profiler" not in _imports(collect / "finish.py")
    assert "torchdoctor.collect.syncs" not in _imports(collect / "syncs_overhead.py")


def test_windows_do_not_land_on_round_step_counts_every_time():
    """A loop that evaluates every 25 steps: windows opening exactly every 100 steps caught
    an evaluation in every window (4 of 20 detailed steps, 4x its real share)."""
    from torchdoctor.collect.schedule import DetailSchedule

    schedule = DetailSchedule("windows", window=5, period_steps=100, period_s=1e9)
    detailed = [i for i in range(400) if schedule.detailed(i, now_s=0.0)]
    assert len(detailed) == 20 and detailed[:5] == [0, 1, 2, 3, 4]
    starts = [i for i in detailed if i - 1 not in detailed]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(100 <= gap <= 150 for gap in gaps)  # one window per period, delayed <= half
    evaluations = [i for i in detailed if i % 25 == 0]
    assert len(evaluations) <= 2  # the real share is 1 in 25 steps: about 1 of 20
    # the same schedule every run (seeded): sessions of one script stay comparable
    again = DetailSchedule("windows", window=5, period_steps=100, period_s=1e9)
    assert [i for i in range(400) if again.detailed(i, now_s=0.0)] == detailed


def _deep_net(depth=40):
    torch.manual_seed(0)  # many tiny modules: a detailed step costs several light ones
    net = nn.Sequential(*[nn.Sequential(nn.Linear(6, 6), nn.Tanh()) for _ in range(depth)])
    return net, torch.optim.SGD(net.parameters(), lr=0.01)


def test_windows_wait_while_detail_costs_more_than_its_budget():
    runs = {}
    for budget in (0.03, 1.0):
        net, opt = _deep_net()
        with torchdoctor.Profiler(syncs=False, window=2, period_steps=10,
                                  detail_budget=budget) as prof:  # fmt: skip
            _loop(prof, net, opt, 200)
        runs[budget] = prof.session
    frugal, dense = runs[0.03]["config"], runs[1.0]["config"]
    assert dense["detail"]["postponed_steps"] == 0 and dense["detail"]["detailed_count"] >= 30
    assert frugal["detail"]["postponed_steps"] > 50
    assert frugal["detail"]["detailed_count"] < dense["detail"]["detailed_count"] / 2
    assert frugal["detail"]["budget_pct"] == 3
    assert any("windows waited" in note and "under 3% of the run" in note
               for note in frugal["notes"])  # fmt: skip
    check_invariants(runs[0.03]["tree"])


@pytest.mark.parametrize("budget", [0.0, -0.1, 1.5])
def test_a_detail_budget_outside_0_to_1_is_refused(budget):
    with pytest.raises(ValueError, match="0 < detail_budget <= 1"):
        torchdoctor.Profiler(detail_budget=budget)
