"""Step boundaries (manual, auto: markers > optimizer > backward > module > whole run) and the
data phase of a wrapped loader."""

import time

import pytest
import torch
from torch import nn

import torchdoctor
from torchdoctor.session_read import walk


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def _batches(n):
    return [torch.randn(3, 4) for _ in range(n)]


def test_manual_steps_with_wrapped_loader_count_data_phase(net):
    def slow_loader():
        for batch in _batches(3):
            time.sleep(0.002)  # sleep never returns early: at least 2 ms of data wait per step
            yield batch

    with torchdoctor.Profiler(net, syncs=False) as prof:
        for batch in prof.wrap_loader(slow_loader()):
            net(batch).sum().backward()
            prof.step()
    s = prof.session
    assert s["config"]["step_boundary"] == "marker"
    assert len(s["steps"]) == 3
    for step in s["steps"]:
        assert step["phases"]["data"] >= 2.0
        assert step["phases"]["forward"] > 0 and step["phases"]["backward"] > 0
        assert sum(step["phases"].values()) == pytest.approx(step["wall_ms"], rel=1e-6)


class _SlowDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, index):
        time.sleep(0.001)  # at least 3 ms of loading per batch of 3
        return torch.randn(4)


def _without_sites(loaders):
    """The loaders' settings and counts (each fetched here, in this file: its ``site``)."""
    assert all(d["site"]["file"] == __file__ for d in loaders)
    return [{k: v for k, v in d.items() if k != "site"} for d in loaders]


def test_unmodified_dataloader_wait_is_the_data_phase(net):
    """No wrap_loader: next() on any DataLoader iterator is timed as the data phase."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(_SlowDataset(), batch_size=3)
    original = torch.utils.data.dataloader._BaseDataLoaderIter.__next__
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", warmup=1) as prof:
        for batch in loader:
            net(batch).sum().backward()
            opt.step()
            opt.zero_grad()
    steps = prof.session["steps"]
    assert len(steps) == 3
    for step in steps:
        assert step["phases"]["data"] >= 3.0
        assert sum(step["phases"].values()) == pytest.approx(step["wall_ms"], rel=1e-6)
    assert torch.utils.data.dataloader._BaseDataLoaderIter.__next__ is original  # removed
    loaders = _without_sites(prof.session["environment"]["data_loaders"])
    assert loaders == [
        {"num_workers": 0, "persistent_workers": False, "pin_memory": False, "iterators": 1,
         "steps": 5}  # 4 steps with a batch, and the partial one whose next() ended the loop
    ]  # fmt: skip


class _Normalize(nn.Module):
    """A transform that is an nn.Module, as torchvision's are."""

    def forward(self, x):
        return (x - 0.5) / 0.25


class _TransformedItems(torch.utils.data.Dataset):
    def __init__(self):
        self.transform = _Normalize()

    def __len__(self):
        return 24

    def __getitem__(self, index):
        return self.transform(torch.rand(4))


def test_modules_called_by_the_loader_are_data_loading_not_the_model(net):
    """An evaluation loop whose Dataset applies an nn.Module transform per item (torchvision's
    Normalize): each step starts at the model's call, not at the transform's, and the transform
    is not in the tree; its time is the data phase's."""
    loader = torch.utils.data.DataLoader(_TransformedItems(), batch_size=4)
    with torch.no_grad(), torchdoctor.Profiler(syncs=False, step_boundary="auto", detail="always") as prof:
        for batch in loader:
            net(batch)
    s = prof.session
    assert s["config"]["step_boundary"] == "module"
    assert len(s["steps"]) >= 3
    types = {node["type"] for node, _ in walk(s["tree"]) if node["type"]}  # (self): None
    assert types == {"Sequential", "Linear", "ReLU"}, types  # no _Normalize
    assert all(step["phases"]["data"] > 0 for step in s["steps"])
    assert all(step["phases"]["forward"] > 0 for step in s["steps"])


def test_loader_iterations_are_counted_per_settings(net):
    """A loader without persistent workers begins a new iterator (new workers) every epoch;
    the session counts them, so the data-loading advice can tell restarts from slow workers."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    data = torch.utils.data.TensorDataset(torch.randn(6, 4))
    fresh = torch.utils.data.DataLoader(data, batch_size=3)
    kept = torch.utils.data.DataLoader(data, batch_size=3, num_workers=1, persistent_workers=True)
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", warmup=0) as prof:
        for _ in range(3):
            for loader in (fresh, kept):
                for (batch,) in loader:
                    net(batch).sum().backward()
                    opt.step()
                    opt.zero_grad()
    loaders = _without_sites(prof.session["environment"]["data_loaders"])
    assert loaders == [
        {"num_workers": 0, "persistent_workers": False, "pin_memory": False, "iterators": 3,
         "steps": 9, "starts": [0, 4, 8]},  # 6 batches, 3 epoch ends in the other's steps
        {"num_workers": 1, "persistent_workers": True, "pin_memory": False, "iterators": 1,
         "steps": 9, "starts": [2]},
    ]  # fmt: skip


def test_auto_optimizer_steps(net):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", warmup=1) as prof:
        for batch in _batches(4):
            opt.zero_grad()
            net(batch).sum().backward()
            opt.step()
    s = prof.session
    assert s["config"]["step_boundary"] == "optimizer"
    assert len(s["steps"]) == 3  # 4 optimizer steps, 1 warm-up
    assert all(step["phases"]["optimizer"] > 0 for step in s["steps"])


def _lbfgs_session(net, steps: int, warmup: int, **options):
    """``steps`` LBFGS steps with a closure (forward + backward each evaluation), profiled."""
    opt = torch.optim.LBFGS(net.parameters(), **options)
    batch = torch.randn(3, 4)

    def closure():
        opt.zero_grad()
        loss = net(batch).pow(2).mean()
        loss.backward()
        return loss

    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", warmup=warmup) as prof:
        for _ in range(steps):
            opt.step(closure)
    return prof.session


def test_auto_lbfgs_closure_counts_forward_and_backward(net):
    s = _lbfgs_session(net, steps=2, warmup=0, max_iter=2)
    assert s["config"]["step_boundary"] == "optimizer"
    assert len(s["steps"]) == 2
    for step in s["steps"]:
        assert step["phases"]["forward"] > 0 and step["phases"]["backward"] > 0
        assert step["phases"]["optimizer"] > 0


def test_lbfgs_with_many_closure_calls_keeps_every_step_whole(net):
    """max_iter=20 runs the model 20 times inside one step(): no inference-loop guess there,
    and no partial first step."""
    s = _lbfgs_session(net, steps=4, warmup=1, max_iter=20, tolerance_grad=0, tolerance_change=0)
    assert s["config"]["step_boundary"] == "optimizer"
    assert not any("outermost" in note for note in s["config"]["notes"]), s["config"]["notes"]
    assert len(s["steps"]) == 3
    walls = [step["wall_ms"] for step in s["steps"]]
    assert min(walls) > 0.3 * max(walls)  # all whole steps: the model ran many times in each


def test_gradient_accumulation_drops_the_partial_step_at_the_switch(net):
    """Backward every micro-batch, optimizer every 4th: steps are decided at backward first,
    then at the optimizer; the step open at the switch (one micro-batch) is not kept."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", warmup=0) as prof:
        for index, batch in enumerate(_batches(20)):
            net(batch).sum().backward()
            if index % 4 == 3:
                opt.step()
                opt.zero_grad()
    s = prof.session
    assert s["config"]["step_boundary"] == "optimizer"
    assert len(s["steps"]) == 4  # updates 2-5: the first ended at the switch, partial
    calls = {n["path"]: n["calls_per_step"] for n, _ in walk(s["tree"]) if n["path"]}
    assert calls["Sequential"] == 4, calls  # four micro-batches in every step


def test_auto_backward_without_optimizer(net):
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto") as prof:
        for batch in _batches(5):
            net(batch).sum().backward()
            with torch.no_grad():
                for p in net.parameters():
                    p -= 0.01 * p.grad
                    p.grad = None
    s = prof.session
    assert s["config"]["step_boundary"] == "backward"
    assert len(s["steps"]) == 3  # iterations 1-2, run while deciding, are dropped
    assert any("backward" in note for note in s["config"]["notes"])


def _sleep_ms(ms):
    time.sleep(ms / 1000)


def test_manual_update_without_modules_has_forward_and_optimizer_phases():
    """The classic tensors-only loop (no nn.Module, no optimizer): the update under no_grad is
    the optimizer phase, the loss computation after it the forward phase."""
    torch.manual_seed(0)
    w = torch.randn(6, 1, requires_grad=True)
    x, y = torch.randn(64, 6), torch.randn(64, 1)
    with torchdoctor.Profiler(syncs=False, step_boundary="auto") as prof:
        for _ in range(6):
            loss = (x @ w - y).pow(2).mean()
            _sleep_ms(2)  # forward work the profiler cannot see as a module
            loss.backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad = None
                _sleep_ms(1)
    s = prof.session
    assert s["config"]["step_boundary"] == "backward"
    assert any("hand-written update" in note for note in s["config"]["notes"])
    for step in s["steps"]:
        phases = step["phases"]
        assert phases["forward"] >= 1.5 and phases["optimizer"] >= 0.8, phases
        assert phases["other"] < 0.5, phases


def test_no_grad_blocks_are_not_an_optimizer_phase_when_an_optimizer_runs(net):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    # warmup=1: the first step (start to the first optimizer step) has no metric before it
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", warmup=1) as prof:
        for batch in _batches(5):
            opt.zero_grad()
            loss = net(batch).sum()
            loss.backward()
            opt.step()
            with torch.no_grad():  # a metric after the step: not the update
                _sleep_ms(2)
    s = prof.session
    assert s["config"]["step_boundary"] == "optimizer"
    assert not any("hand-written update" in note for note in s["config"]["notes"])
    assert all(step["phases"]["other"] >= 1.5 for step in s["steps"]), s["steps"]


def test_clip_grad_norm_is_not_taken_for_a_hand_written_update(net):
    """clip_grad_norm_ opens no_grad inside torch before the first optimizer.step(): torch's
    own block, not the user's update. A user's @torch.no_grad() update function still is."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", warmup=1) as prof:
        for batch in _batches(4):
            opt.zero_grad()
            net(batch).sum().backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
    assert not any("hand-written" in note for note in prof.session["config"]["notes"])

    @torch.no_grad()
    def update():
        for p in net.parameters():
            p -= 0.01 * p.grad
            p.grad = None

    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto") as prof:
        for batch in _batches(4):
            net(batch).sum().backward()
            update()
    assert any("hand-written" in note for note in prof.session["config"]["notes"])


def test_no_grad_in_another_thread_does_not_touch_the_phases(net):
    import threading

    def elsewhere():
        for _ in range(50):
            with torch.no_grad():
                pass

    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto") as prof:
        worker = threading.Thread(target=elsewhere)
        worker.start()
        for batch in _batches(5):
            net(batch).sum().backward()
            with torch.no_grad():
                for p in net.parameters():
                    p -= 0.01 * p.grad
        worker.join()
    assert prof.session["config"]["step_boundary"] == "backward"
    assert torch.autograd.grad_mode.no_grad.__enter__.__qualname__.startswith("no_grad")


def test_auto_inference_loop_uses_module_calls(net):
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto") as prof:
        with torch.no_grad():
            for batch in _batches(5):
                net(batch)
    s = prof.session
    assert s["config"]["step_boundary"] == "module"
    assert len(s["steps"]) == 4  # 5 calls: the first dropped while deciding; the last is whole
    assert any(n.startswith("the last step ends when profiling stops") for n in s["config"]["notes"])
    assert s["tree"]["children"][0]["backward_ms"]["max"] == 0.0


def test_auto_markers_win(net):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto") as prof:
        for batch in _batches(3):
            for _ in range(2):  # two optimizer steps per marked step
                opt.zero_grad()
                net(batch).sum().backward()
                opt.step()
            torchdoctor.step()
    s = prof.session
    assert s["config"]["step_boundary"] == "marker"
    assert len(s["steps"]) == 2  # the first marked step began mid-way (at an optimizer step)
    assert s["tree"]["children"][0]["calls_per_step"] == 2.0


def test_no_boundary_is_one_whole_run_step(net):
    with torchdoctor.Profiler(net, syncs=False) as prof:
        net(torch.randn(3, 4))
    s = prof.session
    assert s["config"]["step_boundary"] == "whole_run"
    assert len(s["steps"]) == 1


@pytest.mark.parametrize("critic_steps", [1, 3])
def test_two_optimizers_in_turn_make_one_step_per_iteration(critic_steps):
    """A GAN loop: discriminator step(s), then the generator step. A step ends at the optimizer
    that closes the round, so a step is one iteration and the generator's backward (which runs
    after the discriminator's step) is measured in the step of its forward."""
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6))
    disc = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))
    opt_g = torch.optim.SGD(gen.parameters(), lr=0.01)
    opt_d = torch.optim.SGD(disc.parameters(), lr=0.01)
    real = torch.randn(16, 6)
    iterations = 8
    with torchdoctor.Profiler(syncs=False, step_boundary="auto") as prof:
        for _ in range(iterations):
            for _ in range(critic_steps):
                fake = gen(torch.randn(16, 4))
                loss_d = disc(fake.detach()).mean() - disc(real).mean()
                opt_d.zero_grad()
                loss_d.backward()
                opt_d.step()
            loss_g = -disc(fake).mean()
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
    s = prof.session
    assert any("optimizers step in turn" in note for note in s["config"]["notes"])
    assert iterations - 3 <= len(s["steps"]) <= iterations - 1
    calls = {n["path"]: n for n, _ in walk(s["tree"]) if n["path"]}
    # (two Sequentials: named by the variables holding them)
    assert calls["gen"]["calls_per_step"] == critic_steps  # the generator
    assert calls["disc"]["calls_per_step"] == 2 * critic_steps + 1  # the discriminator
    assert calls["gen"]["backward_ms"]["mean"] > 0  # its backward is in the same step


def test_warmup_longer_than_the_run_says_so(net):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", warmup=10) as prof:
        for batch in _batches(3):
            net(batch).sum().backward()
            opt.step()
    notes = " ".join(prof.session["config"]["notes"])
    assert "3 step(s) seen, warm-up 10" in notes and "lower the warm-up" in notes


class _SlowItems(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, index):
        time.sleep(0.004)
        return torch.randn(4)


def test_the_data_advice_is_about_the_loader_that_feeds_the_steps(net):
    """minGPT: the training loader has 4 workers; an evaluation in one step iterates another
    loader without workers. The data-loading advice is about the training loader's workers,
    not "num_workers=0"."""
    from torchdoctor.reports import with_advice

    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    train = torch.utils.data.DataLoader(_SlowItems(), batch_size=2, num_workers=1)
    evaluation = torch.utils.data.DataLoader(torch.randn(64, 4), batch_size=8)
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", warmup=1) as prof:
        for k, batch in enumerate(train):
            if k == 5:
                with torch.no_grad():
                    for held_out in evaluation:
                        net(held_out)
            net(batch).sum().backward()
            opt.step()
            opt.zero_grad()
    loaders = {d["num_workers"]: d["steps"] for d in prof.session["environment"]["data_loaders"]}
    assert loaders[0] == 1 and loaders[1] >= 30
    [advice] = [a for a in with_advice(prof.session)["advice"] if a["rule"] == "data-loading"]
    assert "1 workers do not keep up" in advice["title"], advice["title"]


def test_each_optimizer_s_settings_are_noted_at_its_first_step(net):
    """What the optimizer-step rule reads: its class, fused support, what it was given."""
    opt = torch.optim.AdamW(net.parameters(), lr=0.01, foreach=True)
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", warmup=1) as prof:
        for batch in _batches(3):
            net(batch).sum().backward()
            opt.step()
            opt.zero_grad()
    [noted] = prof.session["environment"]["optimizers"]
    assert noted["type"] == "AdamW" and noted["fused_supported"] is True
    assert [noted[k] for k in ("fused", "foreach", "dtype", "driver")] == [None, True, "float32", None]
    assert noted["numel"] == sum(p.numel() for p in net.parameters()) and noted["device"] == "cpu"


def test_the_step_s_own_row_says_when_it_is_mostly_data_loading(net):
    """mnist_hogwild's test loop: the step's (self) row held 11 ms of data loading and pointed
    at a 0.15 ms hot line; it now says "data ... ms" first."""
    from torchdoctor.render.tree import render_tree_text

    loader = torch.utils.data.DataLoader(_SlowDataset(), batch_size=3)
    with torch.no_grad(), torchdoctor.Profiler(syncs=False, step_boundary="auto") as prof:
        for _ in range(3):
            for batch in loader:
                net(batch)
    [row] = [c for c in prof.session["tree"]["children"] if c["kind"] == "self"]
    assert row["phases_ms"]["data"] >= 3.0  # 3 items of >= 1 ms each per batch
    text = render_tree_text(prof.session)
    assert "(self)  data " in text and " ms" in text.split("(self)  data ", 1)[1][:12]
