"""The profiler and the cyclic garbage collector (collect/garbage.py): what existed at the start
is frozen while it runs and unfrozen after; a detailed step keeps few collector-tracked objects
per module call until it closes (each survivor brings full collections closer: on an LSTMCell
loop they took 130-220 ms each, one or two per detailed step)."""

from __future__ import annotations

import gc

import torch

import torchdoctor
from torchdoctor.collect.garbage import FrozenObjects


class _Cells(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = torch.nn.LSTMCell(4, 8)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = torch.zeros(x.shape[0], 8)
        outs = []
        for xt in x.split(1, dim=1):
            h, c = self.cell(xt.expand(-1, 4), (h, c))
            outs.append(self.head(h))
        return torch.cat(outs, 1)


def test_the_objects_alive_at_the_start_are_frozen_while_it_runs_only():
    model = torch.nn.Linear(3, 3)
    before = gc.get_freeze_count()  # (the interpreter's own: a few hundred on Python 3.12)
    with torchdoctor.Profiler(model, syncs=False) as prof:
        assert gc.get_freeze_count() > before
        at_start = gc.get_freeze_count()
        made_in_the_step = [[i] for i in range(1000)]  # (alive when the first backward begins)
        model(torch.ones(2, 3)).sum().backward()
        assert gc.get_freeze_count() >= at_start + len(made_in_the_step)  # frozen again
        prof.step()
        at_second = gc.get_freeze_count()
        made_later = [[i] for i in range(1000)]  # (alive at the second backward)
        model(torch.ones(2, 3)).sum().backward()
        prof.step()
        # once only: what the second step made is not frozen (a frozen object that its
        # reference count frees meanwhile, as any, lowers the count: no equality)
        assert gc.get_freeze_count() < at_second + len(made_later)
    assert gc.get_freeze_count() <= before


def test_an_inference_loop_is_frozen_again_when_its_first_step_ends():
    model = torch.nn.Linear(3, 3)
    before = gc.get_freeze_count()
    with torch.no_grad(), torchdoctor.Profiler(model, syncs=False) as prof:
        model(torch.ones(2, 3))
        at_start = gc.get_freeze_count()
        made_in_the_step = [[i] for i in range(1000)]
        prof.step()
        assert gc.get_freeze_count() >= at_start + len(made_in_the_step)
    assert gc.get_freeze_count() <= before


def test_a_program_that_froze_objects_itself_is_left_alone():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        ours = FrozenObjects()
        ours.start()
        ours.again()
        # (a frozen object that dies leaves the permanent generation: the count may only drop)
        assert gc.get_freeze_count() <= frozen  # not frozen again
        ours.release()
        assert 0.9 * frozen <= gc.get_freeze_count() <= frozen  # nor unfrozen (that gives 0)
    finally:
        gc.unfreeze()
    gc.disable()
    try:  # a disabled collector: nothing to spare it
        ours = FrozenObjects()
        ours.start()
        assert gc.get_freeze_count() == 0 and not ours.active
    finally:
        gc.enable()


def _tracked_by_forward(model: torch.nn.Module, x: torch.Tensor) -> int:
    for _ in range(5):  # (earlier tests' garbage freed in stages: finalizers, weak callbacks)
        if not gc.collect():
            break
    before = len(gc.get_objects())
    out = model(x)
    gc.collect()
    after = len(gc.get_objects())
    out.sum().backward()
    return after - before


def test_a_detailed_step_keeps_few_tracked_objects_per_module_call():
    torch.manual_seed(0)
    model, x = _Cells(), torch.randn(2, 200)
    plain = _tracked_by_forward(model, x)
    calls = 2 * 200 + 1  # the cell and the head per time step, and the model
    with torchdoctor.Profiler(model, detail="always", syncs=False, hot_lines=False) as prof:
        for _ in range(2):
            model(x).sum().backward()
            prof.step()
        detailed = _tracked_by_forward(model, x)
        prof.step()
    per_call = (detailed - plain) / calls
    # (13 per call before the records became untracked tuples and the hooks their own lists)
    assert per_call < 7, per_call
