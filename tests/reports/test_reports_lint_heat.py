"""End to end: a real profile and real lint findings; the finding on the line that syncs in the
profiled step outranks the same finding in code the step never runs."""

from __future__ import annotations

import importlib.util
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import torch


    def train(model, opt, batches, log):
        for x, y in batches:
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            log.append(loss.item())


    def evaluate(model, batches, log):
        for x, y in batches:
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            log.append(loss.item())
    """
)


def test_hot_lint_finding_outranks_the_cold_one(tmp_path):
    pytest.importorskip("torchdoctor.collect.profiler")
    lint = pytest.importorskip("torchdoctor.lint")
    from torchdoctor import advise, profile

    path = tmp_path / "train_script.py"
    path.write_text(SCRIPT)
    spec = importlib.util.spec_from_file_location("train_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = (torch.randn(8, 4), torch.randn(8, 1))
    log: list[float] = []

    session = profile(
        lambda: script.train(model, opt, [batch], log), model=model, steps=2, warmup=1
    )
    findings = lint.lint_paths([str(path)], select=["TD201"])
    assert sorted(f.line for f in findings) == [11, 18]  # train and evaluate
    advice = [a for a in advise(session, lint=findings) if a.rule == "lint"]
    hot, cold = advice
    assert "train_script.py:11" in hot.title and hot.heat == 0.05  # 1 sync per step
    assert "not hot" in hot.title + cold.title and cold.heat == 0.0
    assert hot.priority < cold.priority
