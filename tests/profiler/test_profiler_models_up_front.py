"""An inference script that builds its models first, then runs them one loop after another
(`torchdoctor run` starts profiling before the script builds anything): the light steps, which
hook the first loop's model alone, hook the other models the script built too, so a later
loop's calls are steps of their own, not the last step's "work after the loop"."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as torch_module

import torchdoctor
from torchdoctor.analyze.tree import check_invariants


def _models():
    return (nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)),
            nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 4)))  # fmt: skip


def test_a_model_built_up_front_and_run_after_the_first_loop_makes_steps():
    torch.manual_seed(0)
    with (
        torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False, window=3,
                             period_steps=20, detail_budget=1.0) as prof,
        torch.no_grad(),
    ):  # fmt: skip
        first, second = _models()  # (both built while profiling, as under `run`)
        for _ in range(60):
            first(torch.randn(2, 8))
        for _ in range(40):
            second(torch.randn(2, 8))
    session = prof.session
    steps = session["steps"]
    assert len(steps) >= 95  # (60 + 40 calls, less the deciding ones)
    assert all(step["model_calls"] == 1 for step in steps[:-1])
    tree = str(session["tree"])
    assert "'GELU'" in tree and "'ReLU'" in tree  # (both models' layers, in their own steps)
    check_invariants(session["tree"])
    assert not second._forward_pre_hooks and not torch_module._global_forward_pre_hooks


def test_a_model_built_before_profiling_is_left_as_it_was():
    # near miss: built before the profiler started (an API user's model): not known, so its
    # loop after the first is still the last step's work, as before
    torch.manual_seed(0)
    first, second = _models()
    with (
        torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False, window=3,
                             period_steps=20, detail_budget=1.0) as prof,
        torch.no_grad(),
    ):  # fmt: skip
        for _ in range(60):
            first(torch.randn(2, 8))
        for _ in range(40):
            second(torch.randn(2, 8))
    assert len(prof.session["steps"]) < 70
