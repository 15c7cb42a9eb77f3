"""The session's estimate of the profiler's own cost: measured from its own detailed and light
steps when it has enough of both, else the calibrated sum (hooks, audit, hot lines with the
calls its mode only dispatched)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchdoctor
from torchdoctor.collect.assemble import typical_steps
from torchdoctor.collect.profiler_overhead import estimate_profiler_overhead, measured_detail_ms
from torchdoctor.collect.schedule import LINES_EVERY, DetailSchedule


def _train(prof, steps):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)  # per-parameter calls: parked for lines
    x = torch.randn(8, 6)
    for _ in range(steps):
        opt.zero_grad()
        out = net(x)
        loss = (out - out.mean()).square().mean() + out.abs().mean()  # timed as a user line
        loss.backward()
        opt.step()
        prof.step()


def test_always_uses_the_calibrated_sum_with_the_line_collectors_parts():
    with torchdoctor.Profiler(syncs=False, detail="always") as prof:
        _train(prof, 6)  # too few steps for control steps to measure anything
    estimate = prof.session["config"]["profiler_overhead"]
    assert estimate["source"] == "calibrated"
    assert estimate["overhead_ms"] == pytest.approx(estimate["calibrated_overhead_ms"])
    state = prof.state
    assert state.line_calls_timed > 0  # the loss line's calls
    assert state.line_calls_seen > state.line_calls_timed  # + the Linear's calls, zero_grad's
    assert state.line_own_ns > 0  # measured inside the collector, from its own clock readings
    # without hot lines the calibrated sum has nothing of them
    with torchdoctor.Profiler(syncs=False, detail="always", hot_lines=False) as bare:
        _train(bare, 6)
    assert bare.state.line_calls_seen == bare.state.line_own_ns == 0


def test_windows_measure_the_detail_cost_from_their_own_steps():
    with torchdoctor.Profiler(syncs=False, window=5, period_steps=15, detail_budget=1.0) as prof:
        _train(prof, 40)  # detailed: 0-4, 15-19, 30-34; the first detailed step is left out
    estimate = prof.session["config"]["profiler_overhead"]
    summaries = list(prof.state.summaries)
    assert sum(s["detailed"] for s in summaries[1:]) == 14 and len(summaries) == 40
    # the steps the tree keeps (a stall on a loaded host is left out, of the estimate too)
    _, out = typical_steps(prof.state.detailed_summaries(), [s["wall_ms"] for s in summaries])
    summaries = [s for s in summaries if all(s is not o for o in out)]
    detailed = sorted(s["wall_ms"] for s in summaries[1:] if s["detailed"])
    light = sorted(s["wall_ms"] for s in summaries if not s["detailed"])
    # mean detailed - median light, over the run's own steps (a detailed step over 3x the
    # median detailed one is the loop's own work, left out: measured_detail_ms)
    difference = measured_detail_ms([(s["detailed"], s["wall_ms"]) for s in summaries], 1)
    slowest = max(detailed)
    if slowest <= 3 * detailed[len(detailed) // 2] and not out:  # the plain formula
        assert difference == pytest.approx(sum(detailed) / len(detailed) - light[12])
    if difference > 0 and "measured_discarded_ms" not in estimate:
        assert estimate["source"] == "measured"
        assert estimate["overhead_ms"] == pytest.approx(difference)
    else:  # noise made detailed steps look cheaper (or the difference is noise): calibrated
        assert estimate["source"] == "calibrated"
    assert estimate["calibrated_overhead_ms"] > 0


def test_measured_detail_needs_enough_steps_of_each_kind():
    assert measured_detail_ms([(True, 2.0)] * 4 + [(False, 1.0)] * 50) is None
    assert measured_detail_ms([(True, 2.0)] * 5 + [(False, 1.0)] * 4) is None
    steps = [(True, 9.0)] * 5 + [(True, 3.0)] * 5 + [(False, 1.0)] * 20
    assert measured_detail_ms(steps, first_window=5) == 2.0  # the warm-up window left out
    assert measured_detail_ms(steps[:7] + steps[10:], first_window=5) is None  # too few others


def test_a_measured_detail_cost_replaces_the_calibrated_sum_in_the_run_total():
    common = dict(backward=False, steps=100, detailed_steps=10, hook_ms_per_step=0.5)
    calibrated = estimate_profiler_overhead(10, 10.0, **common)
    measured = estimate_profiler_overhead(10, 10.0, measured_detail_ms=2.0, **common)
    assert calibrated["source"] == "calibrated" and measured["source"] == "measured"
    assert measured["overhead_ms"] == 2.0
    assert measured["calibrated_overhead_ms"] == calibrated["overhead_ms"]
    assert measured["run_overhead_ms"] == pytest.approx(10 * 2.0)
    # the share of a detailed step is of the detailed step, not of the median (light) step
    share = estimate_profiler_overhead(10, 10.0, measured_detail_ms=2.0, detailed_step_ms=12.0,
                                       **common)  # fmt: skip
    assert share["overhead_pct"] == pytest.approx(100 * 2.0 / 10.0)


def test_the_run_share_is_of_the_steps_whole_time_not_steps_times_the_median():
    # a diffusers sampler on a busy machine: 117 steps, median 37 ms, but detailed steps of
    # 1250 ms and stalls in light ones (mean 295 ms); steps x median (4.3 s) was less than the
    # profiler's 3.1 s in steps, and the share came out as 7e14 %
    common = dict(backward=False, steps=117, detailed_steps=5, measured_detail_ms=612.0,
                  detailed_step_ms=1250.0)  # fmt: skip
    whole = estimate_profiler_overhead(132, 37.0, mean_step_ms=295.0, **common)
    total = whole["run_overhead_ms"]
    assert whole["run_overhead_pct"] == pytest.approx(100 * total / (117 * 295.0 - total))
    assert 0 < whole["run_overhead_pct"] < 100
    # a mean under the median (a few very fast steps) does not shrink the base
    low = estimate_profiler_overhead(132, 37.0, mean_step_ms=30.0, **common)
    assert (
        low["run_overhead_pct"]
        == estimate_profiler_overhead(132, 37.0, **common)["run_overhead_pct"]
    )


def test_a_measured_cost_within_the_light_steps_noise_and_far_over_the_parts_is_not_used():
    common = dict(backward=False, steps=100, detailed_steps=10, hook_ms_per_step=0.5)
    calibrated = estimate_profiler_overhead(10, 10.0, **common)["overhead_ms"]
    noisy = estimate_profiler_overhead(10, 10.0, measured_detail_ms=20 * calibrated,
                                       light_spread_ms=40 * calibrated, **common)  # fmt: skip
    assert noisy["source"] == "calibrated" and noisy["overhead_ms"] == calibrated
    assert noisy["measured_discarded_ms"] == 20 * calibrated
    # a large difference the light steps can not explain stands (the profiler may cost more
    # than its parts: recompiles, cold caches) ...
    clear = estimate_profiler_overhead(10, 10.0, measured_detail_ms=20 * calibrated,
                                       light_spread_ms=calibrated, **common)  # fmt: skip
    assert clear["source"] == "measured" and "measured_discarded_ms" not in clear
    # ... and so does one near the parts, however noisy the light steps
    near = estimate_profiler_overhead(10, 10.0, measured_detail_ms=2 * calibrated,
                                      light_spread_ms=40 * calibrated, **common)  # fmt: skip
    assert near["source"] == "measured"


def test_the_first_steps_extra_is_added_only_when_the_measured_cost_leaves_it_out():
    common = dict(backward=False, steps=100, detailed_steps=10, hook_ms_per_step=0.5,
                  registration_ms=1.0, first_step_ms=3.0)  # fmt: skip
    measured = estimate_profiler_overhead(10, 10.0, measured_detail_ms=2.0, **common)
    assert measured["run_overhead_ms"] == pytest.approx(10 * 2.0 + 3.0)
    assert measured["first_step_ms"] == 3.0
    calibrated = estimate_profiler_overhead(10, 10.0, **common)  # registration instead
    without = estimate_profiler_overhead(10, 10.0, **{**common, "registration_ms": 0.0})
    assert calibrated["run_overhead_ms"] == pytest.approx(without["run_overhead_ms"] + 1.0)


def test_without_warm_up_the_first_detailed_steps_profiler_work_is_measured_and_added():
    """The first step is left out of the measured cost (the script's own first-step work), but
    the profiler's first calls (registering modules, classifying code) are its cost."""
    with torchdoctor.Profiler(syncs=False, window=5, period_steps=15, detail_budget=1.0) as prof:
        _train(prof, 40)
    state, estimate = prof.state, prof.session["config"]["profiler_overhead"]
    later = (state.hook_ns + state.line_own_ns - state.first_detail_ns) / 14
    assert state.first_detail_ns > later  # registration and first sight happen there
    assert estimate["first_step_ms"] == pytest.approx((state.first_detail_ns - later) / 1e6)
    with torchdoctor.Profiler(syncs=False, window=5, period_steps=15, warmup=1,
                              detail_budget=1.0) as warm:
        _train(warm, 41)  # with a warm-up step the first detailed step counts: nothing added
    assert warm.session["config"]["profiler_overhead"]["first_step_ms"] == 0.0


def test_always_runs_light_control_steps_and_measures_detail_against_them():
    with torchdoctor.Profiler(detail="always") as prof:  # with the sync audit
        _train(prof, 64)
    summaries = list(prof.state.summaries)
    light = [i for i, s in enumerate(summaries) if not s["detailed"]]
    schedule = DetailSchedule("always")
    assert light == [i for i in range(64) if not schedule.detailed(i, 0.0)]
    assert len(light) == 6 and min(light) >= 16  # one per block of 8 from step 16
    session = prof.session
    assert session["config"]["detail"]["detailed_count"] == 64 - 6
    assert session["config"]["detail"]["audited_count"] == 64  # the audit runs on in them
    # hot lines and the tree average the detailed steps: a control step dilutes nothing
    (line,) = [r for r in session["hot_lines"]["lines"] if "square().mean()" in r["code"]]
    assert line["calls_per_step"] == pytest.approx(1)
    estimate = session["config"]["profiler_overhead"]
    measured = measured_detail_ms([(s["detailed"], s["wall_ms"]) for s in summaries], 5)
    assert measured is not None
    assert estimate["source"] == ("measured" if measured > 0 else "calibrated")


def test_short_always_profiles_are_detailed_throughout():
    with torchdoctor.Profiler(detail="always") as prof:
        _train(prof, 16)
    assert all(s["detailed"] for s in prof.state.summaries)


def test_windows_detailed_steps_carry_the_audit_and_every_other_one_lines():
    with torchdoctor.Profiler(window=5, period_steps=10, detail_budget=1.0) as prof:
        _train(prof, 30)
    summaries = list(prof.state.summaries)
    schedule = DetailSchedule("windows", window=5, period_steps=10, period_s=1e9)
    expected = [schedule.detailed(i, now_s=0.0) for i in range(30)]
    assert [s["detailed"] for s in summaries] == expected and expected.count(True) >= 10
    assert all(s["audited"] for s in summaries if s["detailed"])
    # lines at a window's even places (LINES_EVERY = 2), its first step included
    starts = [i for i in range(30) if expected[i] and (i == 0 or not expected[i - 1])]
    timed = [
        expected[i] and (i - max(st for st in starts if st <= i)) % LINES_EVERY == 0
        for i in range(30)
    ]
    assert [s.get("lines") is not None for s in summaries] == timed
    assert all(timed[st] for st in starts) and 0 < timed.count(True) < expected.count(True)
    section = prof.session["hot_lines"]  # (of the tree's steps: the first may be left out)
    assert timed.count(True) - 1 <= section["steps"] < section["detailed_steps"]
    assert any("lines timed in" in note for note in section["notes"])


def test_always_finds_a_sync_that_happens_only_in_a_control_step():
    schedule = DetailSchedule("always")
    control = next(i for i in range(16, 64) if not schedule.detailed(i, 0.0))
    x = torch.ones(3)
    with torchdoctor.Profiler(detail="always") as prof:
        for index in range(40):
            y = x * 2
            if index == control:
                y.sum().item()  # ONCE
            prof.step()
    assert not list(prof.state.summaries)[control]["detailed"]
    (sync,) = [s for s in prof.session["syncs"] if s["kind"] == "item"]
    assert sync["count"] == 1


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_a_profiler_closed_under_no_grad_calibrates_with_autograd_on(mode, monkeypatch):
    """``with torch.no_grad(), Profiler():`` closes the profiler under the user's grad mode;
    the calibrations (never run before in this process: caches emptied) build graphs and run
    their backward all the same, and the session is made."""
    from torchdoctor.collect import lines_overhead, profiler_overhead

    monkeypatch.setattr(profiler_overhead, "_cost_us", {})
    monkeypatch.setattr(lines_overhead, "_cost_us", {})
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with mode(), torchdoctor.Profiler(step_boundary="auto", detail="always") as prof:
        for _ in range(6):
            net(torch.randn(3, 4))
    assert prof.session["config"]["step_boundary"] == "module"
    assert prof.session["config"]["profiler_overhead"]["calibrated_overhead_ms"] > 0
    assert lines_overhead._cost_us and profiler_overhead._cost_us  # calibrated here


def test_a_failing_estimate_costs_a_note_not_the_session(monkeypatch):
    from torchdoctor.collect import finish

    def broken(*args):
        raise RuntimeError("calibration broke")

    monkeypatch.setattr(finish, "note_profiler_overhead", broken)
    with torchdoctor.Profiler(syncs=False, detail="always") as prof:
        _train(prof, 3)
    session = prof.session
    assert len(session["steps"]) == 3 and session["tree"]["children"]
    assert any("calibration broke" in note for note in session["config"]["notes"])


def test_a_hot_lines_per_call_cost_holds_its_own_calls_not_the_whole_audit():
    """A model of many library layers and a one-call loss line: the audit sees every layer's
    F.linear, the lines time only the user's own calls; a timed call is charged the lines'
    cost alone: the calls seen untimed (attribute reads end the gap a line's clock counts) and
    the audit's (measured in situ: nothing in a line's time) are no line's."""
    from torchdoctor.collect.lines_overhead import line_call_cost_us

    net = nn.Sequential(*[nn.Linear(8, 8) for _ in range(24)])
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.randn(4, 8)
    with torchdoctor.Profiler(net, detail="always") as prof:
        for _ in range(6):
            loss = net(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            prof.step()
    overhead = prof.session["config"]["profiler_overhead"]
    assert prof._paced  # (an audit ran: its calls are not charged to the lines)
    bound = max(line_call_cost_us("timed"), line_call_cost_us("outside"))
    assert overhead["per_timed_call_us"] <= bound + 1e-9
    assert overhead["no_grad_call_us"] <= line_call_cost_us("later") + 1e-9
    assert overhead["first_call_us"] <= overhead["no_grad_call_us"] <= overhead["per_timed_call_us"]


def test_a_run_of_one_detail_window_uses_the_calibrated_sum():
    """Its detailed steps all sit in the script's own warm-up: no later window balances them."""
    with torchdoctor.Profiler(syncs=False, window=5, period_steps=100) as prof:
        _train(prof, 40)  # detailed: 0-4 only; 35 light steps
    assert prof.session["config"]["detail"]["detailed_steps"] == [[0, 4]]
    estimate = prof.session["config"]["profiler_overhead"]
    # the calibrated sum, or the window's own difference when that is smaller (an upper
    # bound: the warm-up can only slow the window's steps)
    assert estimate["source"] in ("calibrated", "window bound")
    assert estimate["overhead_ms"] <= estimate["calibrated_overhead_ms"]


def test_one_windows_difference_bounds_a_larger_calibrated_sum():
    """ultralytics' predictor, 62 steps: 5 detailed steps 20.4 ms over the light ones, the
    calibrated parts 37.8 ms (the sync audit's per-call cost, calibrated on other calls)."""
    common = dict(backward=False, steps=62, detailed_steps=5, hook_ms_per_step=9.6,
                  audit_calls_per_step=2478, audit_cost_us=9.45)  # fmt: skip
    calibrated = estimate_profiler_overhead(216, 23.2, **common)["overhead_ms"]
    bound = estimate_profiler_overhead(216, 23.2, window_bound_ms=20.4, **common)
    assert bound["source"] == "window bound" and bound["overhead_ms"] == 20.4
    assert bound["calibrated_overhead_ms"] == calibrated > 20.4
    assert bound["run_overhead_ms"] < estimate_profiler_overhead(216, 23.2, **common)["run_overhead_ms"]
    # larger than the calibrated sum (the warm-up in it): the calibrated sum stands
    assert estimate_profiler_overhead(216, 23.2, window_bound_ms=2 * calibrated,
                                      **common)["source"] == "calibrated"  # fmt: skip
    # far under it: the light steps differ for another reason (a growing sequence)
    assert estimate_profiler_overhead(216, 23.2, window_bound_ms=0.1 * calibrated,
                                      **common)["source"] == "calibrated"  # fmt: skip


def test_the_estimate_counts_the_kept_steps_calls_not_the_warm_ups():
    """A script that stopped (raised) in its first step after warm-up: the session shows that
    partial step, whose audited calls are few; the warm-up step's are not its (it read ~505%
    of a 2.6 ms partial step)."""
    net = nn.Linear(4, 4)
    with torchdoctor.Profiler(net, warmup=1) as prof:
        for _ in range(200):  # the warm-up step: many audited calls
            net(torch.ones(2, 4)).sum().item()
        prof.step()
        net(torch.ones(2, 4)).sum().item()  # the partial step: one forward, one .item()
    estimate = prof.session["config"]["profiler_overhead"]
    assert len(prof.session["steps"]) == 1
    assert 0 < estimate["audit_calls_per_step"] < 20
