"""A training loop's light steps count their outermost model calls even when one of the
modules called outermost also runs inside another: minimalRL's DQN plays an episode through
``self.forward(obs)`` (its layers called outermost, one call a layer) between updates that call
the Q-network itself (the layers inside it). Its light steps counted no call at all, so the
rollout steps could not stand for the audited ones (sync rates read 0.25 a step, ~16 true)."""

import torch
from torch import nn
from torch.nn.modules import module as torch_module

import torchdoctor


class Qnet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 16), nn.Linear(16, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))

    def sample_action(self, obs):
        return int(self.forward(obs).argmax())  # (the layers called outermost)


def _dqn(steps=40, episode=6):
    torch.manual_seed(0)
    q = Qnet()
    opt = torch.optim.SGD(q.parameters(), lr=0.01)
    with torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False, window=3,
                              period_steps=100) as prof:  # fmt: skip
        for i in range(steps):
            if i % 10 == 1:  # an episode between updates (the first in a detailed step)
                for _ in range(episode):
                    q.sample_action(torch.randn(1, 4))
            q(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    return prof.session, q


def test_calls_of_a_module_also_run_inside_another_count_once_each():
    session, q = _dqn()
    light = [s for s in session["steps"] if not s["detailed"]]
    assert light and all(s.get("model_calls") for s in light)
    rollouts = [s for s in light if s["model_calls"] > 1]
    # each episode: 6 policy calls of 2 layers each, called outermost: 12, and one update
    assert rollouts and all(s["model_calls"] == 13 for s in rollouts)
    assert all(s["model_calls"] == 1 for s in light if s not in rollouts)
    assert not q._forward_pre_hooks and not q.fc1._forward_hooks
    assert not torch_module._global_forward_pre_hooks
