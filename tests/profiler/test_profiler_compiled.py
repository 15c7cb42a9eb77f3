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
    # six windows, yet the graph is compiled once more at most (the audit's mode on or off)
    assert plain >= 1 and _graphs() - before <= plain + (1 if syncs else 0)
    assert not [w for w in seen if "global hooks on modules" in str(w.message)]


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
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "torchdoctor", "run", "--out", str(out), "--no-history",
         str(script)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
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
