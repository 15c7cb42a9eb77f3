"""The profiler leaves the user's random state as it found it."""

import torch


def test_calibrating_the_hooks_cost_leaves_the_users_random_state_alone(monkeypatch):
    """The first profiler in a process calibrates its hooks on a small seeded model: that
    seeded the user's generator (torch.manual_seed(0)), so a script's random stream changed
    at its first profiled stop (found when a test of the attention probe ran first)."""
    from torchdoctor.collect import profiler_overhead

    monkeypatch.setattr(profiler_overhead, "_cost_us", {})  # (as in a fresh process)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    assert profiler_overhead.per_module_call_cost_us(backward=True) >= 0.0
    assert torch.equal(torch.get_rng_state(), before)
