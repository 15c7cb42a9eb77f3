"""A training loop calling a method of another file's class that is a whole training step
(KnowledgeGraphEmbedding's ``KGEModel.train_step``: backward, optimizer step and a log dict of
``.item()`` reads): the reads are told in the method, once, not again at the call."""

from __future__ import annotations

import textwrap
from pathlib import Path

from torchdoctor.lint import lint_paths

MODEL = """
    import torch

    class KGEModel(torch.nn.Module):
        @staticmethod
        def train_step(model, optimizer, batches):
            optimizer.zero_grad()
            loss = model(next(batches).cuda()).mean()
            loss.backward()
            optimizer.step()
            return {"loss": loss.item()}

    class Meter:
        def update(self, value):
            self.total = value.item()
"""

RUN = """
    import torch
    from model import KGEModel, Meter

    def run(batches, steps):
        kge_model = KGEModel()
        meter = Meter()
        opt = torch.optim.Adam(kge_model.parameters())
        for step in range(steps):
            log = kge_model.train_step(kge_model, opt, batches)
            loss = kge_model(next(batches).cuda()).mean()
            loss.backward()
            opt.step()
            meter.update(loss)
"""


def test_a_step_method_is_told_inside_and_a_metric_method_at_the_call(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(textwrap.dedent(MODEL))
    (tmp_path / "run.py").write_text(textwrap.dedent(RUN))
    found = sorted((Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD201"]))
    assert ("model.py", 11) in found  # loss.item() in the step method
    assert ("run.py", 10) not in found  # its call: the same read, told once
    assert ("run.py", 14) in found  # Meter.update reads, and is no step: told at the call
