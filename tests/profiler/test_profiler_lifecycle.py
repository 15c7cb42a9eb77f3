"""Hooks are removed on every exit path; nested profilers raise; the session survives errors."""

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module
from torch.optim import optimizer as torch_optimizer

import torchdoctor
from torchdoctor.collect.state import STATE


def _hook_counts():
    return (
        len(torch_module._global_forward_pre_hooks),
        len(torch_module._global_forward_hooks),
        len(torch_module._global_forward_hooks_always_called),
        len(torch_module._global_backward_hooks),
        len(torch_module._global_backward_pre_hooks),
        len(torch_optimizer._global_optimizer_pre_hooks),
        len(torch_optimizer._global_optimizer_post_hooks),
        torch.autograd.backward,
        torch.autograd.grad,
        torch._C._autograd._top_saved_tensors_default_hooks(False),
    )


class Boom(nn.Module):
    def __init__(self, error):
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.error = error

    def forward(self, x):
        self.inner(x)
        raise self.error


@pytest.mark.parametrize("error", [RuntimeError("bad batch"), KeyboardInterrupt()])
def test_exception_inside_step_leaves_no_hooks(error):
    before = _hook_counts()
    model = Boom(error)
    prof = torchdoctor.Profiler(model, syncs=True)
    with pytest.raises(type(error)):
        with prof:
            model(torch.randn(2, 4, requires_grad=True))
    assert _hook_counts() == before
    assert STATE.profiler is None and STATE.module_stack == [] and STATE.step_index == -1
    session = prof.session
    assert session["interrupted"] is True
    assert type(error).__name__ in session["error"]
    assert session["tree"] is not None  # what was measured before the error is kept


def test_profile_propagates_step_errors_and_cleans_up():
    before = _hook_counts()

    def step():
        raise ValueError("step failed")

    with pytest.raises(ValueError, match="step failed"):
        torchdoctor.profile(step, steps=2, warmup=0, syncs=False)
    assert _hook_counts() == before
    assert STATE.profiler is None


def test_nested_profiler_raises_clear_error_and_outer_keeps_working():
    before = _hook_counts()
    net = nn.Linear(3, 3)
    with torchdoctor.Profiler(net, syncs=False) as outer:
        with pytest.raises(RuntimeError, match="already active"):
            with torchdoctor.Profiler(net, syncs=False):
                pass
        net(torch.randn(2, 3)).sum().backward()
        outer.step()
    assert _hook_counts() == before
    assert len(outer.session["steps"]) == 1
    assert outer.session["tree"]["children"][0]["path"] == "Linear"


def test_start_stop_api_and_single_use():
    net = nn.Linear(3, 3)
    prof = torchdoctor.Profiler(net, syncs=False)
    assert prof.start() is prof
    net(torch.randn(2, 3)).sum().backward()
    prof.step()
    session = prof.stop()
    assert session is prof.session and len(session["steps"]) == 1
    assert prof.stop() is session  # stopping twice returns the same session
    with pytest.raises(RuntimeError, match="already used"):
        prof.start()


def test_regions_and_step_are_no_ops_without_profiler():
    assert STATE.profiler is None
    calls = []

    @torchdoctor.region("decorated")
    def work(x):
        calls.append(x)
        return x * 2

    with torchdoctor.region("block") as r:
        assert work(3) == 6
    assert r is torchdoctor.region("block")  # one cached object per name
    torchdoctor.step()
    assert calls == [3]
    with pytest.raises(TypeError, match="non-empty string"):
        torchdoctor.region("")


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="step_boundary"):
        torchdoctor.Profiler(step_boundary="epoch")
    with pytest.raises(TypeError, match="nn.Module"):
        torchdoctor.Profiler(model="resnet")
    with pytest.raises(ValueError, match="compare_inference"):
        torchdoctor.profile(lambda: None, compare_inference=True)


def test_a_run_of_one_step_says_how_long_its_warm_up_step_took():
    """pytorch/examples' time_sequence_prediction with --steps 1: its one LBFGS step (94% of
    the run) is the warm-up, so the report shows only what follows; the note says how long the
    skipped step took and how to see it."""
    import time

    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", warmup=1) as prof:
        net(torch.ones(2, 4)).sum().backward()
        time.sleep(0.05)  # (the long step)
        opt.step()
        with torch.no_grad():
            net(torch.ones(2, 4))  # (an evaluation after it: the partial step)
    (note,) = [n for n in prof.session["config"]["notes"] if "no complete step" in n]
    assert "the warm-up step(s) took" in note and "--warmup 0" in note
    took = float(note.split("took ")[1].split(" ms")[0].replace(",", ""))
    assert took >= 50.0
