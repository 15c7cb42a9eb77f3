"""A run whose steps were first cut at module calls (a rollout calling a policy and a value
net) and then at optimizer steps: the steps noted before are dropped with all their figures."""

import torch
from torch import nn

import torchdoctor


def test_module_sets_noted_before_the_boundary_moved_are_forgotten():
    """stable-baselines3's A2C: its rollout calls the policy's parts before the first
    optimizer.step(); the module sets noted then outlived the dropped steps and building the
    session raised IndexError (no report, exit code 1)."""
    torch.manual_seed(0)
    actor, critic = nn.Linear(4, 2), nn.Linear(4, 1)
    opt = torch.optim.SGD([*actor.parameters(), *critic.parameters()], lr=0.01)
    with torchdoctor.Profiler(step_boundary="auto", syncs=False) as prof:
        for i in range(30):  # a rollout: steps cut at module calls, two kinds of steps
            with torch.no_grad():
                (actor if i % 3 else critic)(torch.randn(1, 4))
        for _ in range(12):  # training: steps end at optimizer.step()
            x = torch.randn(8, 4)
            (actor(x).sum() + critic(x).sum()).backward()
            opt.step()
            opt.zero_grad()
    session = prof.session
    assert session["config"]["step_boundary"] == "optimizer"
    assert len(session["steps"]) >= 10
    assert not any("outer_modules" in s for s in session["steps"])
