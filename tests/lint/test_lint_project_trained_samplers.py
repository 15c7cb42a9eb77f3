"""TD602 and a sampler whose results a training step differentiates, across files: the
callers that count are those of the sampler itself (a bare call in another script with its
own ``def`` of the name is that script's function, not this one)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from torchdoctor.lint import lint_paths

SAMPLER = """
    import torch

    def sample_trajectories(policy, states, n):
        logps = []
        for t in range(n):
            dist = torch.distributions.Categorical(logits=policy(states))
            logps.append(dist.log_prob(dist.sample()))
        return torch.stack(logps).sum(0)

    def sample_for_logs(policy, batches):
        outs = []
        for b in batches:
            outs.append(policy(b).argmax(-1))
        return outs
"""

TRAIN = """
    from sampler import sample_trajectories

    def train(policy, opt, states, iters):
        for it in range(iters):
            loss = sample_trajectories(policy, states, 8).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
"""

OTHER = """
    import torch

    def sample_for_logs(policy, batches):
        return torch.stack([policy(b) for b in batches]).sum()

    def tune(policy, opt, batches):
        score = sample_for_logs(policy, batches)
        score.backward()
        opt.step()
"""


def test_a_sampler_trained_through_by_another_file_is_left_and_a_namesake_is_not_its_caller(
    tmp_path: Path,
) -> None:
    """`train.py` differentiates what `sample_trajectories` returns: its loop needs autograd.
    `other.py` differentiates its own `sample_for_logs`, which says nothing of the sampler
    file's `sample_for_logs`, whose results are only logged: TD602 there."""
    (tmp_path / "sampler.py").write_text(textwrap.dedent(SAMPLER))
    (tmp_path / "train.py").write_text(textwrap.dedent(TRAIN))
    (tmp_path / "other.py").write_text(textwrap.dedent(OTHER))
    found = [(Path(f.path).name, f.line, f.code) for f in lint_paths([tmp_path], select=["TD602"])]
    assert found == [("sampler.py", 13, "TD602")]
