"""Syncs per step after the profiler revised its step boundary (pytorch/examples' reinforce.py,
unmodified): the first episode was cut at each policy call (module steps) until the first
optimizer step; those steps are dropped, and so must be their syncs. The audit numbered its
events with the profiler's running step counter, which went on from the dropped steps, so the
sync table counted the first episode's reads and missed the outlier steps (a long episode):
210 reads "per step" against 150 policy calls per step in the tree."""

from __future__ import annotations

import random

import torch

from torchdoctor.collect.profiler import Profiler


def _episodes(policy: torch.nn.Module, opt: torch.optim.Optimizer, episodes: int) -> None:
    rng = random.Random(0)
    for episode in range(episodes):
        length = 240 if episode % 40 == 25 else rng.randint(20, 40)  # now and then a long one
        log_probs = []
        for _ in range(length):
            probs = torch.softmax(policy(torch.randn(1, 4)), -1)
            action = torch.multinomial(probs, 1)
            log_probs.append(torch.log(probs[0, action.item()]))  # one read per policy call
        loss = -torch.stack(log_probs).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_syncs_per_step_match_the_calls_per_step_after_the_boundary_changed():
    torch.manual_seed(0)
    policy = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.SGD(policy.parameters(), lr=1e-3)
    with Profiler(policy, warmup=1, hot_lines=False, step_boundary="auto") as prof:
        _episodes(policy, opt, 60)
    session = prof.session
    assert any("step boundary changed" in n for n in session["config"]["notes"])
    detail = session["config"]["detail"]
    records = session["syncs"]
    (read,) = [r for r in records if r["kind"] == "item"]
    calls = session["tree"]["children"][0]["calls_per_step"]
    # every audited step is one the session kept (none of the dropped module steps)
    assert read["steps"] <= detail["audited_count"]
    # one read per policy call: the same per step as the tree's calls, within the long
    # episodes' weight (the tree leaves outlier steps out, the table counts them at their rate)
    assert 0.8 * calls <= read["per_step"] <= 1.6 * calls, (read, calls, detail)
    assert not session["steps"][0].get("input_shape"), "input shapes of the dropped steps"
