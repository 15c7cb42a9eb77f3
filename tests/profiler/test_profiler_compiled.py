"""The profiler with torch.compile: Dynamo must not trace its hooks and modes, and detail windows
must not recompile the user's code (collect/compiled.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

import torchdoctor

pytest.importorskip("torch._dynamo")


def _model():
    torch.manual_seed(0)
    block = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
    return nn.Sequential(block, nn.Linear(16, 1))


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _graphs_plain_then_profiled(plain, profiled, **options):
    """Dynamo's new graphs for ``plain()``, then for ``profiled(prof)`` under a Profiler made
    with ``options`` (Dynamo reset before each); returns (plain, profiled, the profiler)."""
    import torch._dynamo

    torch._dynamo.reset()
    before = _graphs()
    plain()
    plain_graphs = _graphs() - before
    torch._dynamo.reset()
    before = _graphs()
    with torchdoctor.Profiler(**options) as prof:
        profiled(prof)
    return plain_graphs, _graphs() - before, prof


def _train(compiled, opt, x, steps, prof=None):
    for _ in range(steps):
        loss = compiled(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if prof is not None:
            prof.step()


@pytest.mark.parametrize("syncs", [False, True])
def test_a_compiled_model_trains_under_the_profiler_without_extra_recompiles(syncs):
    import torch._dynamo

    torch._dynamo.reset()
    model = _model()
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 16)
    before = _graphs()  # (the counter is process-wide and cumulative)
    _train(compiled, opt, x, 3)
    plain = _graphs() - before
    torch._dynamo.reset()
    before = _graphs()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with torchdoctor.Profiler(syncs=syncs, window=2, period_steps=5) as prof:
            _train(compiled, opt, x, 30, prof)
    session = prof.session
    assert session.get("error") is None
    assert [c["path"] for c in session["tree"]["children"]][0] == "OptimizedModule"
    assert session["config"]["detail"]["detailed_steps"][:2] == [[0, 1], [5, 6]]
    # six windows, yet the graph is not compiled again: the audit's mode stays on the stack
    # in light steps, passing calls through (a mode on or off is a guard: a recompile)
    assert plain >= 1 and _graphs() - before == plain
    assert not [w for w in seen if "global hooks on modules" in str(w.message)]


def _run_script(script, tmp_path):
    """``torchdoctor run`` of ``script`` in a fresh process: (the finished process, --out)."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "torchdoctor", "run", "--out", str(out), "--no-history",
         str(script)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done, out


def test_run_profiles_an_unmodified_script_that_compiles_its_model(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent("""
        import torch
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        opt = torch.optim.AdamW(model.parameters())
        step_model = torch.compile(model, backend="eager")
        x = torch.randn(4, 8)
        for it in range(12):
            loss = step_model(x).square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            if it % 5 == 0:
                print("loss", loss.item())
    """)
    )
    done, out = _run_script(script, tmp_path)
    assert "global hooks on modules" not in done.stderr
    session = torchdoctor.Session.load(out / "session.json")
    assert session["config"]["step_boundary"] == "optimizer"
    assert "OptimizedModule" in [c["path"] for c in session["tree"]["children"]]


def test_recompiles_inside_the_steps_are_measured_and_advised():
    """A batch size that changes recompiles the graph in a later step: the session has the
    compile time per step (Dynamo's own timers), the advice names it with its saving."""
    from torchdoctor.analyze.advice.compile_time import recompiles

    torch._dynamo.reset()
    model = _model()
    compiled = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torchdoctor.Profiler(syncs=False, warmup=0) as prof:
        for step in range(8):
            rows = 4 if step < 3 else 7  # a new batch size at step 3
            compiled(torch.randn(rows, 16)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            prof.step()
    info = prof.session["compile"]
    indices = [s["index"] for s in info["steps"]]
    assert indices[0] == 0 and 3 in indices and info["compile_ms"] > 0
    (advice,) = recompiles(prof.session)
    assert "recompiles" in advice.title and "dynamic=True" in advice.fix
    assert advice.estimated_saving_ms > 0
    # a model compiled once and fed one shape: no recompiles, no advice
    torch._dynamo.reset()
    steady = torch.compile(_model())
    with torchdoctor.Profiler(syncs=False, warmup=1) as calm:
        for _ in range(6):
            steady(torch.randn(4, 16)).sum().backward()
            calm.step()
    assert recompiles(calm.session) == []


def _nanogpt_like(compiled, opt, x, iterations):
    """nanoGPT's loop: an evaluation under no_grad every 10 iterations (from the 5th: its graph
    compiles in a step kept), two micro-steps of gradient accumulation, AdamW (its step pops
    the audit's mode: the optimizer phase)."""
    for it in range(iterations):
        if it % 10 == 5:
            with torch.no_grad():
                compiled(x)
        for _ in range(2):
            (compiled(x).pow(2).mean() / 2).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_steps_found_on_their_own_compile_no_more_graphs_than_the_plain_loop():
    """Under `run` (steps found on their own, the first ones dropped while deciding) the
    compiled model saw the audit's mode in detailed steps and none in light ones: nanoGPT with
    compile=True got "torch.compile recompiles in 2 later steps: 56% of the run" from
    torchdoctor's own modes, at indices of steps dropped since."""
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(8, 16)
    plain, profiled, prof = _graphs_plain_then_profiled(
        lambda: _nanogpt_like(torch.compile(model, backend="eager"), opt, x, 30),
        lambda prof: _nanogpt_like(torch.compile(model, backend="eager"), opt, x, 30),
        step_boundary="auto", window=2, period_steps=6,
    )  # fmt: skip
    assert plain == 2 and profiled == plain  # (with grad and under no_grad)
    compile_info = prof.session["compile"]  # (the evaluation's graph, in the step of it 5)
    assert compile_info["steps_with_compile"] == 1
    assert 0 < compile_info["steps"][0]["index"] < 5, compile_info


def test_a_compiled_function_sees_one_mode_stack_in_detailed_and_light_steps():
    """torch.compile of a loss function (called from user code, where the hot-lines mode is on
    the stack in detailed steps): light steps keep the mode there, passing calls through."""
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(8, 16)

    def loss_of(inputs):
        return model(inputs).pow(2).mean()

    def train(steps, prof=None):
        compiled = torch.compile(loss_of, backend="eager")
        for _ in range(steps):
            compiled(x).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if prof is not None:
                prof.step()

    plain, profiled, prof = _graphs_plain_then_profiled(
        lambda: train(3), lambda prof: train(24, prof), window=2, period_steps=5
    )
    assert plain == 1 and profiled == plain
    assert prof.session.get("hot_lines") is not None  # (the detailed steps timed lines)


def test_a_data_loader_does_not_recompile_a_compiled_model_at_every_step():
    """The module hooks were taken off while a DataLoader yields and registered again after:
    new keys in torch's global hooks dict, on which Dynamo guards. Hugging Face's Trainer with
    torch_compile=True recompiled its model at every step (8 times, then eager)."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data = torch.utils.data.TensorDataset(torch.randn(64, 16))
    loader = torch.utils.data.DataLoader(data, batch_size=8)

    def train(epochs):
        compiled = torch.compile(model, backend="eager")
        for _ in range(epochs):
            for (x,) in loader:
                compiled(x).pow(2).mean().backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

    plain, profiled, prof = _graphs_plain_then_profiled(
        lambda: train(1), lambda prof: train(3), step_boundary="auto", window=2, period_steps=5
    )
    assert plain == 1 and profiled == plain
    assert prof.session["config"]["step_boundary"] == "optimizer"
    assert prof.session["phases"]["data"]["mean"] > 0


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _model()

    def forward(self, x):
        return self.inner(x).tanh()


def test_a_module_compiled_in_place_keeps_its_row_and_compiles_as_often_as_plain():
    """``module.compile()`` compiles ``_call_impl``: Dynamo compiled the profiler's hooks and
    modes as frames of their own, as no-ops (the tree lost the model) guarded on their
    arguments (recompiled call after call); they are kept out of Dynamo now."""

    def train(steps, prof=None):
        torch.manual_seed(0)
        block = _Block()
        block.compile(backend="eager")
        opt = torch.optim.SGD(block.parameters(), lr=0.01)
        _train(block, opt, torch.randn(8, 16), steps, prof)

    plain, profiled, prof = _graphs_plain_then_profiled(
        lambda: train(3), lambda prof: train(20, prof), window=2, period_steps=5
    )
    assert plain >= 1 and profiled == plain
    assert [c["path"] for c in prof.session["tree"]["children"]][0] == "_Block"


def test_torchscript_compiles_no_grad_blocks_under_run(tmp_path):
    """karpathy/llm.c's train_gpt2.py imports torch.distributed.optim, whose functional
    optimizers are torch.jit.script'ed at import with `with torch.no_grad():` inside; TorchScript
    compiles no_grad's __enter__/__exit__ from their source, and the profiler's wrappers (with
    *exc) made the import raise NotSupportedError before the script ran a step. A scripted
    gradient penalty calling torch.autograd.grad, wrapped by the profiler, must still compile
    to aten::grad."""
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent("""
        import torch
        from torch.distributed.optim import ZeroRedundancyOptimizer  # noqa: F401

        @torch.jit.script
        def scaled(x):
            with torch.no_grad():
                y = x * 2
            return y

        @torch.jit.script
        def penalty(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            g = torch.autograd.grad([y.sum()], [x], create_graph=True)[0]
            assert g is not None
            return (g.norm() - 1) ** 2

        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(8, 4, requires_grad=True)
        assert not scaled(x).requires_grad
        assert penalty(x, x * x).requires_grad
        for it in range(6):
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
            with torch.no_grad():
                model.weight.mul_(0.99)
    """)
    )
    done, out = _run_script(script, tmp_path)
    session = torchdoctor.Session.load(out / "session.json")
    assert session["config"]["step_boundary"] == "optimizer" and not session.get("error")
