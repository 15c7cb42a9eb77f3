"""An RL evaluation loop (Kaixhin/Rainbow's ``test``): the environment's ``env.eval()`` is its
own class's method (no model put in eval mode), so ``env.step(...)`` in the loop runs no model
and the loop is no TD602 (it was told: ``env`` read as an eval-mode model). A loop running a
model the function puts in eval mode is still told."""

from __future__ import annotations

import textwrap
from pathlib import Path

from torchdoctor.lint import lint_paths

AGENT = """
    import random
    import torch

    class Agent:
        def __init__(self, net):
            self.online_net = net

        def act(self, state):
            {act_body}

        def act_e_greedy(self, state, epsilon=0.001):
            return random.randrange(4) if random.random() < epsilon else self.act(state)
"""

TEST = """
    import torch
    from agent import Agent

    class Env:
        def __init__(self):
            self.training = True

        def eval(self):
            self.training = False

        def step(self, action):
            return torch.zeros(4), 0.0, True

    def test(dqn, episodes):
        env = Env()
        env.eval()
        rewards = []
        for _ in range(episodes):
            state, done, total = torch.zeros(4), False, 0.0
            while not done:
                state, reward, done = env.step(dqn.act_e_greedy(state))
                total += reward
            rewards.append(total)
        return rewards

    def test_model(model, episodes):
        env = Env()
        model.eval()
        for _ in range(episodes):
            state, done = torch.zeros(4), False
            while not done:
                state, reward, done = env.step(model(state).argmax().item())
"""

NO_GRAD = "with torch.no_grad():\n                return self.online_net(state).argmax(1).item()"


def _td602(tmp_path: Path, act_body: str) -> list[tuple[str, int]]:
    (tmp_path / "agent.py").write_text(textwrap.dedent(AGENT).replace("{act_body}", act_body))
    (tmp_path / "test_env.py").write_text(textwrap.dedent(TEST))
    return sorted((Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD602"]))


def test_an_environments_own_eval_makes_no_evaluation_loop(tmp_path: Path) -> None:
    assert _td602(tmp_path, NO_GRAD) == [("test_env.py", 30)]  # test_model's loop only
