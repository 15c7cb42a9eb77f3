"""Hot lines: a line in a loss function, a line calling into a library, a line whose backward
dominates, loops, lines inside user modules, and what is never charged to a line."""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap

import pytest
import torch
from hotlines_helpers import lines_at, marked_line, mean, profile


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- a line in a loss function ---------------------------------------------------------------
W = torch.randn(8, 8, requires_grad=True)
X = torch.randn(32, 8)
ORIGINAL_APPLY = torch.autograd.Function.__dict__["apply"]  # (before any profiler ran)


def penalty(z, cov):
    total = z.new_zeros(())
    for i in range(z.shape[0]):
        total = total + z[i] @ torch.linalg.solve(cov, z[i])  # HOT
    return total / z.shape[0]


def loss_step():
    z = torch.tanh(X @ W)  # CHEAP
    cov = torch.cov(z.detach().T) + torch.eye(8)
    loss = penalty(z, cov) + z.mean()
    loss.backward()


def test_a_line_in_a_loss_function_is_measured_and_named_first():
    session = profile(loss_step)
    hot = marked_line(penalty, "HOT")
    (line,) = lines_at(session, __file__, hot)
    assert line["owner"] == "" and line["owner_kind"] == "root"
    assert line["function"] == "penalty"
    assert "torch.linalg.solve(cov, z[i])" in line["code"]
    assert line["calls_per_step"] == pytest.approx(32)
    assert line["torch_calls_per_step"] == pytest.approx(32 * 5)  # [i] twice, solve, @, +
    solve = next(op for op in line["top_ops"] if op["op"] == "torch.linalg.solve")
    assert solve["calls_per_step"] == pytest.approx(32)
    assert mean(line["forward_ms"]) > 0 and mean(line["backward_ms"]) > 0
    assert line["called_from"]["function"] == "loss_step"
    first = session["advice"][0]
    assert first["rule"] == "hot-line"
    assert first["title"].startswith(f"{os.path.basename(__file__)}:{hot}")
    assert first["locations"] == [f"{line['file']}:{hot}"]
    assert "whiten" in first["fix"] and first["estimated_saving_ms"] > 0
    # the per-element loop is named as such when it has no cure of its own
    assert all(a["rule"] != "unattributed" for a in session["advice"])


# -- a line calling into a library -------------------------------------------------------------
LIBRARY = """
import torch


def spread(x, rounds):
    out = x
    for _ in range(rounds):
        out = torch.sin(out) + 0.5 * out  # inside the library
    return out
"""


@pytest.fixture()
def library(tmp_path, monkeypatch):
    """A third-party package (under a site-packages folder) that runs torch ops itself."""
    root = tmp_path / "site-packages"
    (root / "fakepkg").mkdir(parents=True)
    (root / "fakepkg" / "__init__.py").write_text(textwrap.dedent(LIBRARY))
    monkeypatch.syspath_prepend(str(root))
    sys.modules.pop("fakepkg", None)
    import fakepkg

    yield fakepkg
    sys.modules.pop("fakepkg", None)


def test_a_line_calling_into_a_library_gets_the_library_time_with_the_frame_as_detail(library):
    x = torch.randn(64, requires_grad=True)

    def step():
        y = library.spread(x, 50)  # LIB
        y.sum().backward()

    session = profile(step)
    (line,) = lines_at(session, __file__, marked_line(step, "LIB"))
    assert line["calls_per_step"] == pytest.approx(1)
    assert line["torch_calls_per_step"] == pytest.approx(150)
    assert line["via"] and line["via"][0]["file"] == library.__file__
    assert line["via"][0]["function"] == "spread"
    assert mean(line["backward_ms"]) > 0
    files = {r["file"] for r in session["hot_lines"]["lines"]}
    assert library.__file__ not in files  # never a line of its own


# -- a line whose backward dominates -----------------------------------------------------------
class SlowBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x  # FWD_INSIDE

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        out = torch.zeros_like(x)
        for k in range(x.shape[0]):  # row by row: far slower than the forward
            out[k] = 2 * x[k] * grad[k]
        return out


def test_a_line_whose_backward_dominates():
    w = torch.randn(16, 16, requires_grad=True)
    x = torch.randn(400, 16)

    def step():
        h = x @ w
        y = SlowBackward.apply(h)  # BWD
        y.mean().backward()

    session = profile(step)
    (line,) = lines_at(session, __file__, marked_line(step, "BWD"))
    assert [op["op"] for op in line["top_ops"]] == ["SlowBackward.apply"]
    assert mean(line["backward_ms"]) > 5 * mean(line["forward_ms"])
    # the ops inside the Function's forward are part of its call, not lines of their own
    assert not lines_at(session, __file__, marked_line(SlowBackward.forward, "FWD_INSIDE"))
    advised = [int(a["locations"][0].rpartition(":")[2]) for a in session["advice"] if a["rule"] == "hot-line"]
    assert marked_line(step, "BWD") in advised
    # the profiler put torch's own apply back (a Python classmethod up to torch 2.13, the C
    # _FunctionBase.apply from 2.14)
    assert torch.autograd.Function.__dict__["apply"] is ORIGINAL_APPLY


# -- loops -------------------------------------------------------------------------------------
def test_loops_count_executions_and_python_time_on_the_line():
    # ops heavy enough (tens of us) and steps enough that one stall of the test process (a
    # garbage collection of the whole suite's heap) cannot push the line under 5% of the step
    values = torch.randint(0, 20, (50_000,))

    def step():
        groups = []
        for v in range(20):
            groups.append(torch.where(values == v)[0].float().mean())  # LOOP
        return torch.stack(groups).sum()

    session = profile(step, steps=5)
    (line,) = lines_at(session, __file__, marked_line(step, "LOOP"))
    assert line["calls_per_step"] == pytest.approx(20)
    assert line["torch_calls_per_step"] == pytest.approx(20 * 4)  # ==, where, float, mean
    ops = {op["op"]: op for op in line["top_ops"]}
    assert ops["torch.where"]["calls_per_step"] == pytest.approx(20)
    advice = next(a for a in session["advice"] if a.get("rule") == "hot-line")
    assert "per-element Python loop" in advice["title"] or "group" in advice["title"]


def test_one_execution_of_a_comprehension_line_is_one_call_per_element():
    xs = [torch.randn(4) for _ in range(10)]

    def step():
        return torch.stack([x.exp().sum() for x in xs])  # COMP

    session = profile(step)
    (line,) = lines_at(session, __file__, marked_line(step, "COMP"))
    assert line["calls_per_step"] >= 10  # the comprehension re-runs the call instruction
    assert line["torch_calls_per_step"] == pytest.approx(21)


def test_a_multi_line_statement_is_one_execution_per_iteration():
    # efficient-kan's Cox-de Boor recursion: one statement over six lines, whose operators
    # come back to its first lines after each sub-expression on the next; a line of it was
    # told '18 executions per step' for 3 iterations in each of 2 layers
    x, grid = torch.randn(256, 64), torch.randn(256, 64)

    def step():
        bases = x
        for k in range(3):
            bases = (
                (x - k * grid)  # HEAD
                / (grid + 1.0)
                * bases
            ) + (
                (grid - x)
                / (grid + 2.0)
                * bases
            )
        return bases.sum()

    session = profile(step)
    (line,) = lines_at(session, __file__, marked_line(step, "HEAD"))
    assert line["calls_per_step"] == pytest.approx(3)
    assert line["torch_calls_per_step"] >= 3 * 2  # the subtraction, the division at least


def test_a_recurrence_in_a_loop_is_not_a_per_element_loop_to_batch():
    # efficient-kan's Cox-de Boor recursion (bases = f(bases)), a scan's h = a * h + b: each
    # iteration needs the one before; a running sum's terms (total = total + f(i)) still batch
    from torchdoctor.analyze.advice.hot_lines_cures import cure_for
    from torchdoctor.analyze.advice.hot_lines_data import hot_lines

    x, w = torch.randn(16, 8), torch.randn(8)

    def step():
        h, total = torch.zeros(8), torch.zeros(())
        for t in range(16):
            h = torch.tanh(x[t] * h + w)  # CARRIED
            total = total + (x[t] * w).sum()  # SUMMED
        return h.sum() + total

    session = profile(step)
    carried = marked_line(step, "CARRIED")
    summed = marked_line(step, "SUMMED")
    (row,) = lines_at(session, __file__, carried)
    assert row.get("carried") is True
    (other,) = lines_at(session, __file__, summed)
    assert "carried" not in other
    cures = {r["line"]: cure_for(r, []) for r in hot_lines(session) if r["line"] in (carried, summed)}
    assert cures[summed] is not None and cures[summed].name == "batch the loop"
    assert cures[carried] is None or cures[carried].name != "batch the loop"


# -- modules -----------------------------------------------------------------------------------
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(16, 16)

    def forward(self, x):
        h = self.inner(x)
        for _ in range(10):
            h = h + torch.tanh(h) * 0.1  # IN_MODULE
        return h


def test_lines_inside_a_user_module_refine_its_self_and_library_modules_are_not_lines():
    net = Net()
    x = torch.randn(64, 16)

    def step():
        net(x).sum().backward()

    session = profile(step, model=net)
    (line,) = lines_at(session, __file__, marked_line(Net.forward, "IN_MODULE"))
    assert line["owner"] == "Net" and line["owner_kind"] == "module"
    assert line["calls_per_step"] == pytest.approx(10)
    # the Linear's own op (F.linear, inside torch) is the Linear's time, charged to no line
    inner_call = marked_line(Net.forward, "IN_MODULE") - 2
    assert not lines_at(session, __file__, inner_call)
    net_node = next(c for c in session["tree"]["children"] if c["path"] == "Net")
    own = next(c for c in net_node["children"] if c["kind"] == "self")
    assert own["hot_lines"][0]["line"] == line["line"]


def test_profiler_calls_and_disabled_collection_leave_no_trace():
    before = torch._C._len_torch_function_stack()
    apply = torch.autograd.Function.__dict__["apply"]
    x = torch.randn(8, requires_grad=True)
    session = profile(lambda: (x * 2).sum().backward(), hot_lines=False)
    assert session["hot_lines"] is None
    with pytest.raises(ZeroDivisionError):
        with torch.autograd.profiler.record_function("x"), torchdoctor_profiler():
            (x * 3).sum()
            raise ZeroDivisionError
    assert torch._C._len_torch_function_stack() == before
    assert torch.autograd.Function.__dict__["apply"] is apply


def torchdoctor_profiler():
    import torchdoctor

    return torchdoctor.Profiler(syncs=False)


# -- what the line timing holds ---------------------------------------------------------------
def test_finished_frames_and_their_tensors_are_not_kept_alive():
    """The timing remembers the frame each line last called into; a finished one holds its
    locals (and its callers'). An evaluation loop of 70k calls once held 2.4 GB that way."""
    import weakref

    from torchdoctor.collect.clocks import CpuClock
    from torchdoctor.collect.lines import LineCollector
    from torchdoctor.collect.recorder import Recorder

    refs = []

    def work():
        big = torch.ones(1000)
        refs.append(weakref.ref(big))
        return torch.nn.functional.relu(big)  # F.relu's frame (the entry) holds `big`

    collector = LineCollector(Recorder(CpuClock()))
    collector.start()
    try:
        for _ in range(500):
            work()
        alive = sum(ref() is not None for ref in refs)
        held = len(collector.executions)
        table = collector.end_step()
    finally:
        collector.close()
    assert alive < 100 and held < 100  # (PRUNE_AT + 1 at most) of 500
    called = work.__code__.co_firstlineno + 3
    [entry] = [v for (file, line, *_), v in table.items() if line == called]
    assert entry["calls"] == 500  # each call of work() is still a new execution of the line


# -- torch's own Python code that walks every parameter ---------------------------------------
DEEP = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(12)])


def clipped_step():
    DEEP(X).square().mean().backward()
    torch.nn.utils.clip_grad_norm_(DEEP.parameters(), 1.0)  # CLIP
    DEEP.zero_grad()


@pytest.mark.parametrize("syncs", [False, True], ids=["lines", "lines+audit"])
def test_clip_grad_norm_is_one_timed_call_of_its_line_with_nothing_dispatched_inside(syncs):
    from torchdoctor.collect.lines_install import GRADIENT_UTILITIES
    from torchdoctor.collect.syncs import sync_audit

    before = [getattr(module, name) for module, name in GRADIENT_UTILITIES]
    with sync_audit() if syncs else contextlib.nullcontext() as audit:
        session = profile(clipped_step, steps=3)
    (line,) = lines_at(session, __file__, marked_line(clipped_step, "CLIP"))
    # timed call by call, its 24 parameters' .grad / .device / .dtype reads each went through
    # the mode (and the audit's): 11x its own time on nanoGPT
    assert line["torch_calls_per_step"] == 1
    assert [op["op"] for op in line["top_ops"]] == ["torch.nn.utils.clip_grad_norm_"]
    if syncs:  # no sync inside (no error_if_nonfinite)
        assert audit.records() == []
    assert [getattr(module, name) for module, name in GRADIENT_UTILITIES] == before


SCALER = torch.amp.GradScaler("cpu")
OPT = torch.optim.SGD(DEEP.parameters(), lr=0.01)


def scaled_step():
    SCALER.scale(DEEP(X).square().mean()).backward()
    SCALER.unscale_(OPT)  # UNSCALE
    SCALER.step(OPT)
    SCALER.update()
    OPT.zero_grad()


def test_grad_scaler_unscale_is_one_timed_call_of_its_line():
    session = profile(scaled_step, steps=3)
    (line,) = lines_at(session, __file__, marked_line(scaled_step, "UNSCALE"))
    assert line["torch_calls_per_step"] == 1  # (its per-gradient reads are not dispatched)
    assert [op["op"] for op in line["top_ops"]] == ["GradScaler.unscale_"]
