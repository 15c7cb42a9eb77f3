"""TD403 on a loader a helper returns: one pass when its file's only caller walks it once
(PyTorch-YOLOv3's detect.py), told when another file imports the helper and walks the loader
every epoch (YOLOv3's train.py runs test.py's validation loader after each epoch)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from torchdoctor.lint import lint_paths

EVALUATE = """
    from torch.utils.data import DataLoader

    def _create_validation_data_loader(path, n_cpu):
        dataloader = DataLoader(path, batch_size=8, num_workers=n_cpu)
        return dataloader

    def evaluate(model, dataloader):
        return [model(x) for x in dataloader]

    def evaluate_file(model, path):
        dataloader = _create_validation_data_loader(path, 4)
        return evaluate(model, dataloader)
"""

TRAIN = """
    from evaluate import _create_validation_data_loader, evaluate

    def run(model, path, epochs):
        val = _create_validation_data_loader(path, 4)
        for epoch in range(epochs):
            evaluate(model, val)
"""


def test_a_returned_loader_another_file_walks_every_epoch_is_told(tmp_path: Path) -> None:
    (tmp_path / "evaluate.py").write_text(textwrap.dedent(EVALUATE))
    alone = lint_paths([tmp_path], select=["TD403"])
    assert alone == []  # its one caller walks it once
    (tmp_path / "train.py").write_text(textwrap.dedent(TRAIN))
    found = [(Path(f.path).name, f.line) for f in lint_paths([tmp_path], select=["TD403"])]
    assert found == [("evaluate.py", 5)]
