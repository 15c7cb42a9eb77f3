"""A loop that makes an optimizer anew each iteration (MAML by copy: a deep copy of the model
and an SGD per task, then one Adam step of the base model) is cut at the persistent optimizer:
the round first read as "closed by the SGD that stepped before the Adam" is revised when that
SGD never steps again. Before, the whole run was one partial step with an empty tree."""

import copy

import torch
from torch import nn

import torchdoctor
from torchdoctor.session_read import walk


def _maml_by_copy(iterations, tasks=3, inner_steps=2, persistent_inner=False):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    outer = torch.optim.Adam(base.parameters(), 1e-3)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    kept = [torch.optim.SGD(copy.deepcopy(base).parameters(), 0.01) for _ in range(tasks)]
    with torchdoctor.Profiler(syncs=False, warmup=1, step_boundary="auto") as prof:
        for _ in range(iterations):
            for task in range(tasks):
                fast = copy.deepcopy(base)
                inner = kept[task] if persistent_inner else torch.optim.SGD(fast.parameters(), 0.01)
                for _ in range(inner_steps):
                    inner.zero_grad()
                    nn.functional.mse_loss(fast(x), y).backward()
                    inner.step()
            outer.zero_grad()
            nn.functional.mse_loss(base(x), y).backward()
            outer.step()
    return prof.session


def test_per_task_optimizers_made_anew_cut_steps_at_the_persistent_one():
    iterations = 10
    session = _maml_by_copy(iterations)
    notes = " ".join(session["config"]["notes"])
    assert "never stepped again" in notes and "each step of the Adam" in notes
    assert "closes the round" not in notes  # (the round read first, revised: its note gone)
    # whole iterations: the first ones read the round (and the warm-up step) are dropped
    assert iterations - 5 <= len(session["steps"]) <= iterations - 2
    calls = sum(float(n.get("calls_per_step") or 0.0) for n, _ in walk(session["tree"])
                if str(n.get("path")).startswith("fast") and "." not in str(n.get("path")))  # fmt: skip
    assert abs(calls - 3 * 2) < 1e-6  # every task's inner calls in each step, not a part of them
    # the copies of the detailed steps (fast#k, numbers with gaps) read as one row
    from torchdoctor.analyze.tree import group_repeated_siblings

    rows = [c for c in group_repeated_siblings(session["tree"])["children"]]
    (copies,) = [c for c in rows if c["path"].startswith("fast")]
    assert copies["made_anew"]  # (read "N copies made anew", not "N x ~ms": not all in a step)


def test_persistent_optimizers_in_turn_keep_the_round_as_read():
    """Near miss: the same loop with one SGD per task kept across iterations (a closer that
    steps again): the round stays closed by the last task's SGD, no revision."""
    session = _maml_by_copy(10, persistent_inner=True)
    notes = " ".join(session["config"]["notes"])
    assert "optimizers step in turn" in notes and "never stepped again" not in notes
    assert len(session["steps"]) >= 5


def test_an_optimizer_made_anew_each_epoch_keeps_a_step_per_iteration():
    """`opt = Adam(...)` inside the epoch loop: a new optimizer may take the id of one freed,
    and read as the first stepping "again" after another: the round was decided on a dead
    optimizer and 60 steps were one. Counted while each lives, every step is a step."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    x, y = torch.randn(64, 16), torch.randn(64, 1)
    with torchdoctor.Profiler(syncs=False, step_boundary="auto", warmup=0) as prof:
        for epoch in range(6):
            opt = torch.optim.Adam(net.parameters(), 1e-3 * 0.9**epoch)
            for _ in range(10):
                opt.zero_grad()
                nn.functional.mse_loss(net(x), y).backward()
                opt.step()
    session = prof.session
    assert len(session["steps"]) == 60
    assert not any("step in turn" in note for note in session["config"]["notes"])


def test_a_freed_optimizers_id_taken_by_a_new_one_is_no_step_again():
    """The same in the round tracker: optimizers made and freed in turn take each other's ids
    (CPython reuses the memory); each counts while it lives, so every step cuts."""
    from torchdoctor.collect.rounds import OptimizerRound

    class Optimizer:  # (weakly referable, as torch's are)
        pass

    rounds, actions, ids = OptimizerRound(), [], set()
    for _ in range(6):
        opt = Optimizer()
        ids.add(id(opt))
        actions += [rounds.observe(opt)[0] for _ in range(3)]
        del opt
    assert len(ids) < 6  # (ids were reused: the case this guards)
    assert set(actions) == {"cut"}


def test_copies_made_each_step_are_not_kept_alive():
    """Every copy's weights were held by the profiler's names (ids kept unique by keeping the
    modules): a MAML-by-copy run grew 300 MB in 200 steps. Named by weak references now, a
    freed copy's id may be taken by the next one, which is named and recorded as a module of
    its own."""
    import gc
    import weakref

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = torch.randn(16, 8), torch.randn(16, 1)
    copies = []
    with torchdoctor.Profiler(syncs=False, detail="always") as prof:
        for _ in range(12):
            fast = copy.deepcopy(base)
            copies.append(weakref.ref(fast))
            nn.functional.mse_loss(fast(x), y).backward()
            prof.step()
        del fast
        gc.collect()
        alive = sum(ref() is not None for ref in copies)
    assert alive <= 1, alive
    rows = [c["path"] for c in prof.session["tree"]["children"] if c["kind"] == "module"]
    assert rows and all(path.startswith("fast") for path in rows), rows
