"""Optimizers in turn where one steps more often than the other (TD3: the critics' Adam each
iteration, the actor's every 2nd, cleanrl's td3_continuous_action.py): the round, and so each
step, is 2 iterations; the notes said "(one training iteration)" only, and the step time read
as an iteration's was twice it."""

import torch
from torch import nn

import torchdoctor


def _notes(actor_every: int, iterations: int = 24) -> tuple[str, int]:
    torch.manual_seed(0)
    critic, actor = nn.Linear(6, 1), nn.Linear(4, 2)
    critic_opt = torch.optim.Adam(critic.parameters(), 1e-3)
    actor_opt = torch.optim.Adam(actor.parameters(), 1e-3)
    with torchdoctor.Profiler(syncs=False, step_boundary="auto", warmup=0) as prof:
        for it in range(iterations):
            obs = torch.randn(8, 4)
            act = actor(obs).detach()
            loss = critic(torch.cat([obs, act], 1)).pow(2).mean()
            critic_opt.zero_grad()
            loss.backward()
            critic_opt.step()
            if it % actor_every == 0:
                actor_loss = -critic(torch.cat([obs, actor(obs)], 1)).mean()
                actor_opt.zero_grad()
                actor_loss.backward()
                actor_opt.step()
    session = prof.session
    return " ".join(session["config"]["notes"]), len(session["steps"])


def test_a_delayed_update_says_a_step_spans_its_iterations():
    notes, steps = _notes(actor_every=2)
    assert "optimizers step in turn" in notes, notes
    assert "the Adam over 7 parameters steps 2 times in each round" in notes, notes
    assert "the Adam over 10 parameters that closes it once" in notes, notes
    assert "a step here is 2 of its iterations" in notes, notes
    assert 24 // 2 - 3 <= steps <= 24 // 2, steps


def test_optimizers_stepping_once_each_per_round_say_nothing_more():
    # near miss: actor and critic each step every iteration (a GAN's D and G)
    notes, steps = _notes(actor_every=1)
    assert "optimizers step in turn" in notes, notes
    assert "times in each round" not in notes, notes
    assert 24 - 4 <= steps <= 24, steps
