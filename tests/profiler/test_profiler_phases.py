"""A script whose steps change regime between detail windows (a corpus encoded in batches, then
queries one call each) gets a window in its new phase: sentence-transformers' semantic search
had only its batched phase in the tree and the lines, its 20 one-row queries never detailed."""

from __future__ import annotations

import random

import torch
from torch import nn

import torchdoctor
from torchdoctor.collect.schedule import MAX_PHASES, DetailSchedule

#: the semantic search's step times (ms): 11 batches of 32 (the first 5 a window), 20 queries
SEARCH = [450, 184, 191, 104, 102, 49, 46, 35, 28, 26, 22, 13.7, 8.5, 12.4, 19.8, 12.9, 19.9,
          13.7, 11.2, 11.7, 14.7, 11.3, 12.4, 16.6, 11.8, 11.6, 11.4, 15.5, 11.5, 11.1, 10.0]


def _detailed(schedule: DetailSchedule, walls_ms: list[float], slow_detail: float = 2.5):
    detailed = []
    for i, wall in enumerate(walls_ms):
        is_detailed = schedule.detailed(i, 0.0)
        schedule.observe(i, 1e6 * wall * (slow_detail if is_detailed else 1.0), is_detailed)
        if is_detailed:
            detailed.append(i)
    return detailed


def test_a_new_phase_of_the_light_steps_opens_a_window():
    schedule = DetailSchedule("windows")
    assert _detailed(schedule, SEARCH) == [0, 1, 2, 3, 4, 21, 22, 23, 24, 25]
    assert schedule.config()["phase_steps"] == [21]


def test_steady_noisy_or_periodic_steps_open_no_phase_window():
    noisy = random.Random(0)
    steady = DetailSchedule("windows")
    _detailed(steady, [noisy.uniform(8, 14) for _ in range(300)])
    periodic = DetailSchedule("windows")  # (an evaluation every 10th step: the aimed steps')
    _detailed(periodic, [40.0 if i % 10 == 9 else 10.0 for i in range(300)])
    assert steady.phases == [] and periodic.phases == []
    # a phase that windows cannot afford waits (the budget: detailed steps 2.5x light ones)
    costly = DetailSchedule("windows", window=5, period_steps=20)
    _detailed(costly, [10.0] * 150 + [30.0] * 150)
    assert costly.postponed > 0 and 150 < min(costly.phases or [10**6])
    always = DetailSchedule("always")
    _detailed(always, SEARCH)
    assert always.phases == []


def test_phase_windows_are_bounded():
    schedule = DetailSchedule("windows", period_steps=10**6, budget=1.0)
    walls = [10.0 if (i // 40) % 2 == 0 else 40.0 for i in range(600)]  # 15 regime changes
    _detailed(schedule, walls)
    assert len(schedule.phases) == MAX_PHASES


def test_a_profiled_search_details_its_query_phase():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 64))
    corpus = [torch.randn(256, 64) for _ in range(12)]
    queries = [torch.randn(1, 64) for _ in range(40)]
    with torch.no_grad(), torchdoctor.Profiler(encoder, syncs=False, step_boundary="auto") as prof:
        for batch in corpus + queries:
            encoder(batch)
    session = prof.session
    detail = session["config"]["detail"]
    assert detail["phase_steps"], detail
    shapes = [s.get("input_shape") for s in session["steps"] if s.get("detailed")]
    assert [256, 64] in shapes and [1, 64] in shapes  # (both phases in the detailed steps)


def test_windows_of_a_long_phase_are_weighed_against_its_own_light_steps():
    """The knowledge-distillation tutorial: a teacher trained (7 s steps), then students (0.3 s,
    then 3 s with the frozen teacher's forward). Its teacher windows cost nothing over light
    teacher steps, but were weighed against the median light step, the students': read as
    costing 130%, over the budget for good; the tree was the teacher's alone."""
    stages = [7000.0] * 15 + [300.0] * 16 + [3000.0] * 16 + [2800.0] * 16 + [3000.0] * 16
    schedule = DetailSchedule("windows", window=5, period_steps=10)
    detailed = _detailed(schedule, stages, slow_detail=1.0)
    assert any(15 <= i < 31 for i in detailed), detailed  # the students' phase
    assert any(i >= 31 for i in detailed), detailed
    # near miss: detail that does cost (2.5x) in the same stages still waits for its budget
    costly = DetailSchedule("windows", window=5, period_steps=10)
    assert len(_detailed(costly, stages)) < len(detailed) and costly.postponed > 0


def test_a_window_step_that_waited_for_a_core_is_no_cost_of_detail():
    """The same tutorial on a busy host: two of a teacher window's steps waited 13 s for a CPU
    core (16.7 and 16.0 s among steps of 2.7 s); summed, that wait read as detail's cost and
    the budget ran out for good again. The window's median step is what it costs."""
    stages = [2700.0] * 15 + [100.0] * 16 + [1000.0] * 48
    stages[11] = stages[13] = 16000.0
    schedule = DetailSchedule("windows", window=5, period_steps=10)
    detailed = _detailed(schedule, stages, slow_detail=1.0)
    assert any(i > 20 for i in detailed) and schedule.postponed == 0, detailed
