"""A step loop's call of a function its own file defines is no call of another file's
function of the same name (two scripts linted together, each with its own ``evaluate``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from torchdoctor.lint import lint_paths

DETECTOR = """
    import torch

    def postprocess(scores, boxes, thresh=0.05):
        keep = torch.arange(scores.shape[0], device=scores.device)
        return boxes[keep[scores[keep] > thresh]]

    def evaluate(model, loader):
        out = []
        for x in loader:
            s, b = model(x.cuda())
            out.append(postprocess(s, b))
        return out
"""

LM = """
    import torch

    def evaluate(model, batches):
        return torch.stack([model(x.cuda()).mean() for x in batches]).mean()

    def train(model, loader, val, opt):
        for x in loader:
            loss = model(x.cuda()).mean()
            loss.backward()
            opt.step()
            evaluate(model, val)
"""

CALLER = """
    import torch
    from detector import evaluate

    def train(model, loader, val, opt):
        for x in loader:
            loss = model(x.cuda()).sum()
            loss.backward()
            opt.step()
            evaluate(model, val)
"""


def _lint(tmp_path: Path, files: dict[str, str]) -> list[tuple[str, int, str]]:
    for name, src in files.items():
        (tmp_path / name).write_text(textwrap.dedent(src))
    found = lint_paths([str(tmp_path)], select=["TD207"])
    return sorted((Path(f.path).name, f.line, f.code) for f in found)


def test_another_files_own_function_of_the_same_name_is_not_a_caller(tmp_path: Path) -> None:
    # lm.py's training loop calls lm.py's evaluate, not detector.py's: detector's
    # postprocess runs in no training step
    assert _lint(tmp_path, {"detector.py": DETECTOR, "lm.py": LM}) == []


def test_a_file_importing_the_function_still_calls_it(tmp_path: Path) -> None:
    # near miss: a training loop that imports detector's evaluate does run postprocess
    found = _lint(tmp_path, {"detector.py": DETECTOR, "lm.py": LM, "main.py": CALLER})
    assert ("detector.py", 6, "TD207") in found
