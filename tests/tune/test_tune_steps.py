"""The trial's step watch on a script whose model calls come before its first optimizer step:
stable-baselines3's PPO collects a rollout of 512 policy calls (no backward, no optimizer),
then trains. Counting steps at those calls measured the rollout's policy calls and stopped
the script before any training ("fused optimizer: skipped: no torch.optim optimizer steps")."""

import pytest
from torch import nn, optim

from torchdoctor.collect.script import StopScript
from torchdoctor.tuning.steps import StepWatch

POLICY = nn.Linear(2, 2)
OPTIMIZER = optim.SGD(POLICY.parameters(), lr=0.1)


def _ppo_like(watch: StepWatch, rollout: int = 40, updates: int = 30) -> None:
    for _ in range(3):
        for _ in range(rollout):
            watch.root_call(POLICY)
        for _ in range(updates):
            watch.root_call(POLICY)
            watch.backward_done()
            watch.optimizer_step(OPTIMIZER)


def test_the_probe_waits_past_a_rollout_for_the_first_optimizer_step():
    watch = StepWatch(warmup=2, steps=5, grace_s=60.0)
    with pytest.raises(StopScript):
        _ppo_like(watch)
    assert watch.mode == "optimizer" and len(watch.marks) == 2 + 5 + 1


def test_without_grace_the_rollout_is_measured_as_an_inference_loop():
    watch = StepWatch(warmup=2, steps=5)
    with pytest.raises(StopScript):
        _ppo_like(watch)
    assert watch.mode == "module" and not watch.optimizer_seen


def test_later_trials_take_the_probes_boundary_and_skip_the_rollout_calls():
    watch = StepWatch(warmup=2, steps=5, expect="optimizer")
    with pytest.raises(StopScript):
        _ppo_like(watch)
    assert watch.mode == "optimizer"


def test_an_inference_loop_still_stops_once_the_grace_is_over():
    watch = StepWatch(warmup=1, steps=3, grace_s=0.0)
    with pytest.raises(StopScript):
        for _ in range(100):
            watch.root_call(POLICY)
    assert watch.mode == "module"
