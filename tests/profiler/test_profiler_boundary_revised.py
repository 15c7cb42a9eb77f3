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


def test_a_second_outermost_module_first_called_in_a_light_step_leaves_no_call_open():
    """The seq2seq tutorial's loop: an encoder called once per input token, then a decoder per
    output token, two optimizers. Steps are first cut at module calls; the decoder's first call
    began a light step hooking only the encoder, so its post-hook never ran: counted open, it
    kept the module depth at 1, and every later step had no forward phase (0 ms; the model's
    lines were called work between steps)."""
    torch.manual_seed(0)
    enc, dec = nn.GRUCell(4, 8), nn.Linear(8, 3)
    opts = [torch.optim.SGD(m.parameters(), lr=0.01) for m in (enc, dec)]
    with torchdoctor.Profiler(step_boundary="auto", syncs=False, warmup=1, window=2,
                              period_steps=6) as prof:
        for _ in range(24):
            h = torch.zeros(1, 8)
            for _ in range(6):  # (more encoder calls than the first window's steps)
                h = enc(torch.randn(1, 4), h)
            loss = sum(dec(h).sum() for _ in range(2))
            loss.backward()
            for opt in opts:
                opt.step()
                opt.zero_grad()
        assert prof._rec.module_depth == 0
    detailed = [s for s in prof.session["steps"] if s.get("detailed")]
    assert detailed and all(s["phases"]["forward"] > 0 for s in detailed)
